"""harness.service.Service: the start/stop/close contract every server launcher inherits."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.procs import ProcessError
from harness.service import ListeningLineService

_SERVE = (
    "import json, sys, time\n"
    "print('booting', flush=True)\n"
    "if sys.argv[1] == 'exit': sys.exit(3)\n"
    "if sys.argv[1] == 'serve':\n"
    "    print(json.dumps({'event': 'listening', 'url': 'http://127.0.0.1:9/'}), flush=True)\n"
    "time.sleep(60)\n"
)


class _Child(ListeningLineService):
    """A Python child that announces itself (``serve``), stays silent or exits at once."""

    log_name = "child.log"

    def __init__(self, mode: str, workdir: Path | None = None, start_timeout: float = 10.0):
        super().__init__(name="child", workdir=workdir, start_timeout=start_timeout)
        self.mode = mode

    def argv(self) -> list[str]:
        return [sys.executable, "-c", _SERVE, self.mode]


def test_start_waits_for_ready_and_is_a_noop_while_running() -> None:
    with _Child("serve") as child:
        assert child.url == "http://127.0.0.1:9"
        assert (child.host, child.port) == ("127.0.0.1:9", 9)
        pid = child.process.pid if child.process else 0
        assert child.start().process is not None and child.process.pid == pid
        child.kill()
        assert not child.running
        child.start()
        assert child.running and child.process.pid != pid
        assert child.stop() is not None and not child.running


def test_a_child_that_exits_fails_the_start_with_its_log_tail() -> None:
    child = _Child("exit")
    try:
        with pytest.raises(ProcessError, match=r"(?s)exited with 3.*booting"):
            child.start()
    finally:
        child.close()


def test_a_silent_child_times_out_and_is_killed() -> None:
    child = _Child("silent", start_timeout=0.3)
    try:
        with pytest.raises(ProcessError, match="print its listening line"):
            child.start()
        assert not child.running
    finally:
        child.close()


def test_close_deletes_only_a_work_dir_it_created(tmp_path: Path) -> None:
    own = _Child("serve")
    given = _Child("serve", workdir=tmp_path / "given")
    assert own.stop() is None and given.kill() is None  # no-ops before the first start
    for child in (own, given):
        child.start()
        child.close()
        child.close()
    assert not own.workdir.exists()
    assert (tmp_path / "given" / "child.log").exists()
