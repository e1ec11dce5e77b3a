"""htpasswd files with bcrypt entries only, as registry:2's ``auth.htpasswd`` reads them.

Format: one ``user:$2y$...`` line per user; blank lines and lines starting with ``#`` are
skipped. Anything else (a line without ``:``, an empty name, an MD5 ``$apr1$``, SHA1 ``{SHA}``,
crypt or plain-text entry, a duplicate user) raises :class:`HtpasswdError` naming the file and
the 1-based line number -- never the line itself, which may hold a secret.

:class:`Htpasswd` is the live view an origin keeps: it re-reads the file when its mtime or size
changes (so ``quayside users add`` takes effect without a restart, as in registry:2), verifies
passwords with bcrypt's own constant-time check, and checks unknown users against a dummy hash
so the answer takes as long as for a known one. Successful checks are remembered for
``cache_ttl`` seconds as ``sha256(user NUL password)`` (never the password), so a client that
sends Basic credentials with every request costs one bcrypt per minute, not one per request.

:func:`write_entries` rewrites a file atomically (temp file, fsync, rename; mode 0600).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import bcrypt

__all__ = [
    "DEFAULT_COST",
    "Htpasswd",
    "HtpasswdError",
    "hash_password",
    "parse_htpasswd",
    "read_entries",
    "write_entries",
]

DEFAULT_COST = 10
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
_DUMMY_HASH = bcrypt.hashpw(b"quayside-dummy-password", bcrypt.gensalt(DEFAULT_COST))


class HtpasswdError(ValueError):
    """A malformed or non-bcrypt htpasswd file. ``line`` is 1-based (0: the whole file)."""

    def __init__(self, path: str, line: int, problem: str) -> None:
        where = f"{path}: line {line}" if line else path
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


def hash_password(password: str, cost: int = DEFAULT_COST) -> str:
    """A bcrypt hash (``$2b$``) of ``password``. Raises ValueError for an empty password or
    one longer than bcrypt's 72 bytes (bcrypt would silently ignore the rest)."""
    raw = password.encode()
    if not raw:
        raise ValueError("empty password")
    if len(raw) > 72:
        raise ValueError("password longer than 72 bytes (bcrypt's limit)")
    return bcrypt.hashpw(raw, bcrypt.gensalt(cost)).decode()


def parse_htpasswd(text: str, path: str = "htpasswd") -> dict[str, str]:
    """``{user: bcrypt hash}`` from file content. Raises HtpasswdError with the line number."""
    entries: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            raise HtpasswdError(path, number, "not a 'user:hash' entry")
        if not hashed.startswith(_BCRYPT_PREFIXES) or len(hashed) != 60:
            raise HtpasswdError(
                path,
                number,
                f"entry for {user!r} is not a bcrypt hash (only bcrypt is accepted; "
                "create entries with 'quayside users add' or 'htpasswd -B')",
            )
        if user in entries:
            raise HtpasswdError(path, number, f"user {user!r} appears twice")
        entries[user] = hashed
    return entries


def read_entries(path: str | Path) -> dict[str, str]:
    """Parse the file at ``path``; a missing file is empty. Raises HtpasswdError, OSError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError as exc:
        raise HtpasswdError(str(p), 0, "not UTF-8 text") from exc
    return parse_htpasswd(text, str(p))


def write_entries(path: str | Path, entries: Mapping[str, str]) -> None:
    """Atomically replace ``path`` with ``entries`` (sorted by user), mode 0600."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{user}:{hashed}\n" for user, hashed in sorted(entries.items()))
    fd, tmp = tempfile.mkstemp(prefix=".htpasswd-", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Htpasswd:
    """The users of one htpasswd file, re-read when it changes; see the module docstring.

    Thread-safe (verification runs in worker threads). Raises HtpasswdError from
    :meth:`load` and :meth:`verify` when the file became malformed (the previous entries are
    kept by neither: a broken file must be fixed, not half-trusted).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        cache_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.cache_ttl = cache_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._entries: dict[str, str] = {}
        self._verified: dict[bytes, float] = {}

    def load(self) -> dict[str, str]:
        """Current entries (re-read if the file changed). Raises HtpasswdError, OSError."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, -1)
        with self._lock:
            if stamp != self._stamp:
                self._entries = read_entries(self.path) if stamp[1] >= 0 else {}
                self._stamp = stamp
                self._verified.clear()
            return dict(self._entries)

    def users(self) -> list[str]:
        return sorted(self.load())

    def verify(self, user: str, password: str) -> bool:
        """Whether ``password`` is ``user``'s. Blocking (bcrypt): call it in a thread."""
        entries = self.load()
        key = hashlib.sha256(user.encode() + b"\0" + password.encode()).digest()
        now = self._clock()
        with self._lock:
            expiry = self._verified.get(key)
        if expiry is not None and expiry > now and user in entries:
            return True
        hashed = entries.get(user)
        candidate = hashed.encode() if hashed is not None else _DUMMY_HASH
        raw = password.encode()
        try:
            ok = bcrypt.checkpw(raw[:72], candidate) and len(raw) <= 72
        except ValueError:
            ok = False
        ok = ok and hashed is not None and hmac.compare_digest(candidate, hashed.encode())
        if ok:
            with self._lock:
                if len(self._verified) > 10_000:
                    self._verified.clear()
                self._verified[key] = now + self.cache_ttl
        return ok
