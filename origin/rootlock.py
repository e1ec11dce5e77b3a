"""How ``quayside gc``/``retention`` and a running origin agree on who maintains a root.

Files, beside registry:2's tree (which ignores them)::

    <root>/quayside/origin.lock    flock: origins hold it shared while up
    <root>/quayside/origin.json    {"url": ..., "pid": ...} of the serving origin
    <root>/quayside/admin.token    random secret, mode 0600

The protocol:

* A serving origin holds ``origin.lock`` in **shared** mode from start-up to shutdown (taken
  in a thread before it serves; if an offline collection holds the lock, the origin waits
  for it to finish), publishes ``origin.json`` and creates ``admin.token`` if absent.
* ``quayside gc`` (and ``retention``) first tries to take ``origin.lock`` **exclusive**,
  without waiting. Success means no origin serves the root: the CLI collects in its own
  process, holding the lock so no origin starts meanwhile. Failure means an origin is up:
  the CLI sends the work to it (``POST /_quayside/admin/gc`` with the token from
  ``admin.token``), so the collection runs inside the process whose requests it must not
  race, under that process's :class:`~origin.writeguard.WriteGuard`.

Whoever can read the storage root can delete from it anyway, so possession of the token file
is the authority; it is compared in constant time and never logged. ``flock`` is
advisory and local: two origins on one root (or a root on NFS) are not coordinated.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from pathlib import Path
from typing import Any

from regcore.storage.layout import Layout

TOKEN_HEADER = "X-Quayside-Admin-Token"


def ops_dir(layout: Layout) -> Path:
    return layout.root / "quayside"


class RootLock:
    """``origin.lock`` of one root. Blocking calls: use a worker thread from a loop."""

    def __init__(self, layout: Layout) -> None:
        self.path = ops_dir(layout) / "origin.lock"
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._fd

    def hold_shared(self) -> None:
        """Take the lock shared, waiting while an offline maintenance run holds it."""
        fcntl.flock(self._open(), fcntl.LOCK_SH)

    def try_shared(self) -> bool:
        """Take the lock shared if no maintenance run holds it; False (at once) otherwise."""
        try:
            fcntl.flock(self._open(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def try_exclusive(self) -> bool:
        """Take the lock exclusive if nobody holds it; False (at once) otherwise."""
        try:
            fcntl.flock(self._open(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def ensure_token(layout: Layout) -> str:
    """The root's admin token, created (mode 0600, atomically) if absent."""
    path = ops_dir(layout) / "admin.token"
    with contextlib.suppress(FileNotFoundError):
        token = path.read_text().strip()
        if token:
            return token
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".admin.token.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32))
    try:
        os.link(tmp, path)  # first creator wins; a concurrent one reads the winner's token
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()


def read_token(layout: Layout) -> str | None:
    try:
        return (ops_dir(layout) / "admin.token").read_text().strip() or None
    except OSError:
        return None


def loopback_url(url: str) -> str:
    """A URL the local CLI can reach: wildcard bind addresses become loopback."""
    for wildcard, local in (("//0.0.0.0:", "//127.0.0.1:"), ("//[::]:", "//[::1]:")):
        url = url.replace(wildcard, local)
    return url


def publish(layout: Layout, url: str) -> None:
    """Write ``origin.json`` for this process (atomically)."""
    path = ops_dir(layout) / "origin.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".origin.json.{os.getpid()}")
    tmp.write_text(json.dumps({"url": loopback_url(url), "pid": os.getpid()}))
    os.replace(tmp, path)


def unpublish(layout: Layout) -> None:
    """Remove ``origin.json`` if this process wrote it."""
    found = published(layout)
    if found is not None and found.get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            (ops_dir(layout) / "origin.json").unlink()


def published(layout: Layout) -> dict[str, Any] | None:
    try:
        doc = json.loads((ops_dir(layout) / "origin.json").read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("url"), str) else None
