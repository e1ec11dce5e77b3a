"""Content digests: parse and validate ``algorithm:hex``, and hash streams incrementally.

Only ``sha256`` and ``sha512`` are accepted (the OCI image spec's registered algorithms).
A :class:`Digest` is immutable and hashable; ``str(d)`` is its canonical form.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from regcore import errors

_ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}
# The spec's grammar: algorithm ":" encoded; we then restrict to the registered algorithms.
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_HEX_RE = re.compile(r"^[a-f0-9]+$")


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, value: str) -> Digest:
        """Parse and validate; raises :class:`errors.DigestInvalid` with the offending value."""
        if not isinstance(value, str) or len(value) > 256 or not _DIGEST_RE.match(value):
            raise errors.DigestInvalid(_clip(value), message="invalid digest")
        algorithm, _, encoded = value.partition(":")
        expected = _ALGORITHMS.get(algorithm)
        if expected is None:
            raise errors.DigestInvalid(_clip(value), message="unsupported digest algorithm")
        if len(encoded) != expected or not _HEX_RE.match(encoded):
            raise errors.DigestInvalid(_clip(value), message="invalid digest")
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> Hasher:
        return Hasher(self.algorithm)


def is_digest(value: str) -> bool:
    try:
        Digest.parse(value)
    except errors.DigestInvalid:
        return False
    return True


class Hasher:
    """Incremental hasher that also counts bytes. Not thread-safe."""

    __slots__ = ("_h", "algorithm", "size")

    def __init__(self, algorithm: str = "sha256") -> None:
        if algorithm not in _ALGORITHMS:
            raise errors.DigestInvalid(algorithm, message="unsupported digest algorithm")
        self.algorithm = algorithm
        self._h = hashlib.new(algorithm)
        self.size = 0

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        self._h.update(chunk)
        self.size += len(chunk)

    def digest(self) -> Digest:
        return Digest(self.algorithm, self._h.hexdigest())

    def copy(self) -> Hasher:
        other = Hasher.__new__(Hasher)
        other.algorithm = self.algorithm
        other._h = self._h.copy()
        other.size = self.size
        return other


def _clip(value: object, limit: int = 100) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."
