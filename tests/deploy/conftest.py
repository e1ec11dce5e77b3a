from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.servers import ServerGroup


@pytest.fixture
def server_group(tmp_path: Path) -> Iterator[ServerGroup]:
    group = ServerGroup(tmp_path / "servers")
    try:
        yield group
    finally:
        group.close()
