"""Large test blobs: deterministic incompressible bytes, and the push helpers under the names
integration tests and the bench use (:mod:`harness.oci_http` streams bodies of any size)."""

from __future__ import annotations

import random

from harness.oci_http import push_blob as push_large_blob
from harness.oci_http import push_image as push_large_image

__all__ = ["push_large_blob", "push_large_image", "random_blob"]


def random_blob(size: int, seed: int) -> bytes:
    """``size`` pseudo-random bytes, the same for the same ``seed`` (incompressible)."""
    return random.Random(seed).randbytes(size)
