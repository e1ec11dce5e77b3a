"""Storage quotas per namespace, and the bytes each namespace stores.

A repository's *namespace* is the first component of its name (``team`` for ``team/app/api``;
a one-component name is its own namespace). A namespace's *usage* is the bytes of the unique
blobs linked into any of its repositories (``_layers`` links) plus its manifests (revisions):
a layer shared by ten repositories of the namespace counts once. Blobs whose bytes are gone
(already collected) count nothing.

Where a push is refused, and why there:

* at **blob commit** (upload PUT, monolithic POST, cross-repository mount) and at **manifest
  PUT** for the manifest's own bytes, since those are the moments a namespace's unique bytes
  grow. A blob the namespace already holds costs nothing, so re-pushing or mounting shared
  layers is never refused there. Checking at commit rather than at the manifest means the
  bytes of a refused image are never linked (the upload session is kept, so the client may
  retry after space is freed) and no tag ever points at a half-admitted image.
* **while an upload's bytes arrive** (PATCH, the body of a closing PUT or of a monolithic
  POST; :mod:`origin.quotameter`): the request is refused as soon as the bytes the session
  has received, plus the namespace's usage, plus what the namespace's *other* unfinished
  uploads have received, would exceed the limit; a ``Content-Length`` (or a
  ``Content-Range`` end) is checked before the body is read. So a 5 GiB layer pushed into a
  nearly full namespace is refused after about as many bytes as the namespace has left, not
  after 5 GiB, and ten parallel uploads cannot each squeeze under. The refused session is
  cancelled and its bytes dropped at once (``BLOB_UPLOAD_UNKNOWN`` afterwards); the client
  starts a new upload once space is freed.

  *Blobs the namespace already holds are never refused early.* When the digest is known (a
  closing PUT, a monolithic POST) a held digest is not metered at all. A PATCH does not
  know its digest yet, so its bytes count only once they *cannot* be free: once the session
  holds more bytes than the largest blob of the namespace (a blob of that many bytes cannot
  be one the namespace holds). Until then the session counts nothing and only the commit
  check applies. The price: a session may store up to the size of the namespace's largest
  blob before being metered; what is gained: re-pushing a held layer without asking HEAD
  first (or via a tool that does not) is accepted exactly as at commit.

Guarantees: check and reservation happen without an await in between, so two concurrent
commits cannot both squeeze under the limit; a reservation is dropped if its commit fails.
The same holds for the upload meter: each arriving chunk is checked and charged with no await
in between. Usage is scanned from disk once per namespace (in a thread), then kept up to date
by commits; deletions (gc, retention, DELETE) invalidate it, so it is never under-estimated.
Upload charges are in memory: after a restart a session left on disk counts again from its
next request.

Refusal: 403 ``DENIED`` whose message and ``detail`` give the namespace, the bytes used, the
bytes requested and the limit (an upload refused while its bytes arrive adds ``uploading``:
what the namespace's other unfinished uploads hold, and says its bytes were dropped). Every
refusal is audited (``quota.denied``, with ``stage`` ``commit`` or ``upload``) and counted
(``quayside_origin_quota_denials_total``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable

from origin.opsevents import AuditSink, log_sink
from origin.quotameter import InFlight, UploadDenied, UploadMeter
from origin.rootscan import list_repositories, scan_repository
from regcore import errors
from regcore.digest import Digest
from regcore.opsconfig import QuotaConfig
from regcore.sizes import format_size
from regcore.storage.layout import Layout


def namespace_of(name: str) -> str:
    return name.split("/", 1)[0]


def scan_usage(layout: Layout, names: Iterable[str] | None = None) -> dict[str, dict[Digest, int]]:
    """Unique blobs (digest -> size) per namespace, from disk. Blocking."""
    out: dict[str, dict[Digest, int]] = {}
    sizes: dict[Digest, int | None] = {}
    for name in list_repositories(layout) if names is None else names:
        try:
            scan = scan_repository(layout, name)
        except OSError:
            continue
        held = out.setdefault(namespace_of(name), {})
        for digest in (*scan.layers, *scan.revisions):
            if digest not in sizes:
                try:
                    sizes[digest] = os.stat(layout.blob_data(digest)).st_size
                except OSError:
                    sizes[digest] = None
            size = sizes[digest]
            if size is not None:
                held[digest] = size
    return out


class Usage:
    """The unique blobs (digest -> size) of one namespace, their total and largest size.

    Kept up to date in place by admissions and cancelled reservations; ``total`` is O(1),
    ``largest`` is recomputed only after the largest blob is dropped."""

    def __init__(self, held: dict[Digest, int]) -> None:
        self.held = held
        self.total = sum(held.values())
        self._largest: int | None = None

    @property
    def largest(self) -> int:
        if self._largest is None:
            self._largest = max(self.held.values(), default=0)
        return self._largest

    def add(self, new: dict[Digest, int]) -> None:
        for d, size in new.items():
            if d not in self.held:
                self.held[d] = size
                self.total += size
                if self._largest is not None and size > self._largest:
                    self._largest = size

    def remove(self, digests: Iterable[Digest]) -> None:
        for d in digests:
            size = self.held.pop(d, None)
            if size is not None:
                self.total -= size
                if size == self._largest:
                    self._largest = None


class Quotas:
    """Usage per namespace and quota admission. For the tasks of one event loop.

    ``on_denied`` is called once per refusal (the origin counts them in its metrics)."""

    def __init__(
        self,
        config: QuotaConfig,
        layout: Layout,
        *,
        audit: AuditSink = log_sink,
        on_denied: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.layout = layout
        self.audit = audit
        self.on_denied = on_denied
        self.in_flight = InFlight()
        self._held: dict[str, Usage] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._scanned: dict[str, int] = {}
        self.denials = 0

    def limit(self, name: str) -> tuple[str, int] | None:
        """(quota glob, bytes) for ``name``'s namespace, or None when unlimited."""
        return self.config.limit_for(namespace_of(name))

    async def _namespace(self, ns: str) -> Usage:
        held = self._held.get(ns)
        if held is not None:
            return held
        lock = self._locks.setdefault(ns, asyncio.Lock())
        async with lock:
            held = self._held.get(ns)
            if held is None:
                found = await asyncio.to_thread(self._scan_namespace, ns)
                held = self._held.setdefault(ns, Usage(found))
        return held

    def loaded(self, ns: str) -> Usage | None:
        """The namespace's usage if loaded (None after :meth:`invalidate`, until reloaded)."""
        return self._held.get(ns)

    def _scan_namespace(self, ns: str) -> dict[Digest, int]:
        names = [n for n in list_repositories(self.layout) if namespace_of(n) == ns]
        return scan_usage(self.layout, names).get(ns, {})

    async def usage(self, ns: str) -> int:
        return (await self._namespace(ns)).total

    async def admit(self, name: str, items: Iterable[tuple[Digest, int]]) -> _Reservation:
        """Reserve ``items`` (digest, size) for ``name``'s namespace or raise DENIED."""
        limit = self.limit(name)
        if limit is None:
            return _Reservation(None, [])
        ns = namespace_of(name)
        usage = await self._namespace(ns)
        new = {d: s for d, s in items if d not in usage.held}
        used, requested = usage.total, sum(new.values())
        if new and used + requested > limit[1]:
            raise self.denied(name, limit, used, requested)
        usage.add(new)
        return _Reservation(usage, list(new))

    async def meter(
        self, name: str, key: str, *, offset: int, digest: Digest | None
    ) -> UploadMeter | None:
        """An :class:`~origin.quotameter.UploadMeter` for one request adding bytes to the
        upload ``key`` of ``name`` (``offset`` bytes already received); None when the
        namespace is unlimited or ``digest`` (when known) is a blob the namespace holds."""
        limit = self.limit(name)
        if limit is None:
            return None
        usage = await self._namespace(namespace_of(name))
        if digest is not None and digest in usage.held:
            return None
        return UploadMeter(
            self, name, key, limit, usage, offset=offset, known_new=digest is not None
        )

    def denied(
        self,
        name: str,
        limit: tuple[str, int],
        used: int,
        requested: int,
        *,
        uploading: int | None = None,
    ) -> errors.Denied:
        """Audit and count a refusal; returns the DENIED to raise. ``uploading`` (the other
        unfinished uploads' bytes) marks a refusal while an upload's bytes arrive."""
        ns = namespace_of(name)
        glob, cap = limit
        self.denials += 1
        event = {
            "action": "quota.denied",
            "actor": "client",
            "repository": name,
            "namespace": ns,
            "stage": "commit" if uploading is None else "upload",
            "used": used,
            "requested": requested,
            "limit": cap,
        }
        detail: dict[str, object] = {
            "namespace": ns,
            "used": used,
            "requested": requested,
            "limit": cap,
        }
        figures = f"{format_size(used)} used + "
        exact = f"{used} + "
        tail = ""
        if uploading is not None:
            event["uploading"] = detail["uploading"] = uploading
            figures += f"{format_size(uploading)} in other uploads + "
            exact += f"{uploading} + "
            tail = "; the upload was cancelled and its bytes dropped"
        self.audit(event)
        if self.on_denied is not None:
            self.on_denied()
        cls = errors.Denied if uploading is None else UploadDenied
        return cls(
            detail,
            message=f"quota exceeded for namespace {ns!r}: {figures}{format_size(requested)} "
            f"requested > {format_size(cap)} limit ({exact}{requested} > {cap} bytes, quota "
            f"{glob!r}){tail}",
        )

    def invalidate(self, ns: str | None = None) -> None:
        """Forget cached usage (all namespaces, or one) after deletions."""
        if ns is None:
            self._held.clear()
        else:
            self._held.pop(ns, None)

    def set_scanned(self, usage: dict[str, dict[Digest, int]]) -> None:
        """Record a full scan's bytes per namespace (what :meth:`snapshot` reports)."""
        self._scanned = {ns: sum(held.values()) for ns, held in usage.items()}

    def snapshot(self) -> dict[str, int]:
        """Bytes per namespace: the last full scan, updated by namespaces whose admission
        usage is loaded (those are exact)."""
        out = dict(self._scanned)
        out.update({ns: usage.total for ns, usage in self._held.items()})
        return out


class _Reservation:
    """Digests added to a namespace's usage by :meth:`Quotas.admit`; :meth:`cancel` undoes."""

    def __init__(self, usage: Usage | None, added: list[Digest]) -> None:
        self._usage = usage
        self._added = added

    def cancel(self) -> None:
        if self._usage is not None:
            self._usage.remove(self._added)
        self._added = []
