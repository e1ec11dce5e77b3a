"""The origin's ``/healthz`` (live) and ``/readyz`` (ready), both unauthenticated JSON.

``/healthz`` -- can this origin take pushes? Checks, each cached for
:data:`regcore.health.RESULT_TTL` s and bounded by :data:`regcore.health.PROBE_TIMEOUT` s:

- ``storage`` (required): a two-byte write, ``fsync`` and unlink under the root's
  ``_incomplete/`` (:func:`regcore.health.probe_writable`): a full disk (``ENOSPC``), a
  read-only or permission-less mount fail it. In read-only mode it passes as ``read-only``
  (nothing is written);
- ``disk`` (informational): free bytes and inodes of the root's filesystem; under 5 % of
  either the answer is ``degraded`` (still 200).

``/readyz`` -- can it serve pulls? ``storage`` (required) is the root's blob tree being
listable (a read, so a full disk is still ready: pulls keep working); ``disk`` as above.

Both answer 200 (``ok``/``degraded``) or 503 (``unhealthy``) with the body of
:class:`regcore.health.HealthReport`; a failed check's ``detail`` names the errno
(``ENOSPC: No space left on device``), never a path or a secret.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from origin import state
from regcore.health import (
    CachedCheck,
    Check,
    HealthReport,
    disk_space,
    headroom,
    probe_writable,
)
from regcore.storage.layout import Layout

__all__ = ["HEALTH", "OriginHealth", "add_routes"]


class OriginHealth:
    """The origin's cached checks (see the module docstring). One per application."""

    def __init__(self, layout: Layout, *, readonly: bool) -> None:
        self.layout = layout
        self.readonly = readonly
        self._writable = CachedCheck(self._check_writable)
        self._readable = CachedCheck(self._check_readable)
        self._disk = CachedCheck(self._check_disk)

    async def live(self) -> HealthReport:
        storage, disk = await asyncio.gather(self._writable.get(), self._disk.get())
        return HealthReport({"storage": storage, "disk": disk}, frozenset({"storage"}))

    async def ready(self) -> HealthReport:
        storage, disk = await asyncio.gather(self._readable.get(), self._disk.get())
        return HealthReport({"storage": storage, "disk": disk}, frozenset({"storage"}))

    async def close(self) -> None:
        for check in (self._writable, self._readable, self._disk):
            await check.close()

    async def _check_writable(self) -> Check:
        if self.readonly:
            return Check(True, "read-only")
        await asyncio.to_thread(probe_writable, self.layout)
        return Check(True, "writable")

    async def _check_readable(self) -> Check:
        await asyncio.to_thread(self._list_blobs)
        return Check(True, "readable")

    def _list_blobs(self) -> None:
        blobs = self.layout.blobs
        if blobs.exists():  # a fresh root has no blob yet
            next(iter(blobs.iterdir()), None)
        else:
            self.layout.root.stat()

    async def _check_disk(self) -> Check:
        return headroom(await asyncio.to_thread(disk_space, self.layout.root))


HEALTH: web.AppKey[OriginHealth] = web.AppKey("origin_health", OriginHealth)


async def _healthz(request: web.Request) -> web.Response:
    return (await request.app[HEALTH].live()).response()


async def _readyz(request: web.Request) -> web.Response:
    return (await request.app[HEALTH].ready()).response()


def add_routes(app: web.Application) -> None:
    """``/healthz`` and ``/readyz`` over the app's layout and read-only flag (set them first)."""
    health = OriginHealth(app[state.LAYOUT], readonly=app[state.READONLY])
    app[HEALTH] = health

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        yield
        await health.close()

    app.cleanup_ctx.append(lifespan)
    app.router.add_get("/healthz", _healthz, name="healthz")
    app.router.add_get("/readyz", _readyz, name="readyz")
