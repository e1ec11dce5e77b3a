"""``python -m quayside``: the same as the ``quayside`` command."""

from __future__ import annotations

from quayside.cli import main

if __name__ == "__main__":
    main()
