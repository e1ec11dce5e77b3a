"""Storage quotas per namespace, and the bytes each namespace stores.

A repository's *namespace* is the first component of its name (``team`` for ``team/app/api``;
a one-component name is its own namespace). A namespace's *usage* is the bytes of the unique
blobs linked into any of its repositories (``_layers`` links) plus its manifests (revisions):
a layer shared by ten repositories of the namespace counts once. Blobs whose bytes are gone
(already collected) count nothing.

Where a push is refused, and why there: at **blob commit** (upload PUT, monolithic POST,
cross-repository mount) and at **manifest PUT** for the manifest's own bytes, since those are
the moments a namespace's unique bytes grow. A blob the namespace already holds costs nothing,
so re-pushing or mounting shared layers is never refused. Checking at commit rather than at
the manifest means the bytes of a refused image are never linked (the upload session is kept,
so the client may retry after space is freed) and no tag ever points at a half-admitted image.

Guarantees: check and reservation happen without an await in between, so two concurrent
commits cannot both squeeze under the limit; a reservation is dropped if its commit fails.
Usage is scanned from disk once per namespace (in a thread), then kept up to date by commits;
deletions (gc, retention, DELETE) invalidate it, so it is never under-estimated.

Refusal: 403 ``DENIED`` whose message and ``detail`` give the namespace, the bytes used, the
bytes requested and the limit.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable

from origin.opsevents import AuditSink, log_sink
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


class Quotas:
    """Usage per namespace and quota admission. For the tasks of one event loop."""

    def __init__(self, config: QuotaConfig, layout: Layout, *, audit: AuditSink = log_sink):
        self.config = config
        self.layout = layout
        self.audit = audit
        self._held: dict[str, dict[Digest, int]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._scanned: dict[str, int] = {}
        self.denials = 0

    def limit(self, name: str) -> tuple[str, int] | None:
        """(quota glob, bytes) for ``name``'s namespace, or None when unlimited."""
        return self.config.limit_for(namespace_of(name))

    async def _namespace(self, ns: str) -> dict[Digest, int]:
        held = self._held.get(ns)
        if held is not None:
            return held
        lock = self._locks.setdefault(ns, asyncio.Lock())
        async with lock:
            held = self._held.get(ns)
            if held is None:
                found = await asyncio.to_thread(self._scan_namespace, ns)
                held = self._held.setdefault(ns, found)
        return held

    def _scan_namespace(self, ns: str) -> dict[Digest, int]:
        names = [n for n in list_repositories(self.layout) if namespace_of(n) == ns]
        return scan_usage(self.layout, names).get(ns, {})

    async def usage(self, ns: str) -> int:
        return sum((await self._namespace(ns)).values())

    async def admit(self, name: str, items: Iterable[tuple[Digest, int]]) -> _Reservation:
        """Reserve ``items`` (digest, size) for ``name``'s namespace or raise DENIED."""
        limit = self.limit(name)
        if limit is None:
            return _Reservation(None, [])
        ns = namespace_of(name)
        held = await self._namespace(ns)
        new = {d: s for d, s in items if d not in held}
        used, requested = sum(held.values()), sum(new.values())
        glob, cap = limit
        if new and used + requested > cap:
            self.denials += 1
            self.audit(
                {
                    "action": "quota.denied",
                    "actor": "client",
                    "repository": name,
                    "namespace": ns,
                    "used": used,
                    "requested": requested,
                    "limit": cap,
                }
            )
            raise errors.Denied(
                {"namespace": ns, "used": used, "requested": requested, "limit": cap},
                message=f"quota exceeded for namespace {ns!r}: {format_size(used)} used + "
                f"{format_size(requested)} requested > {format_size(cap)} limit ({used} + {requested} > "
                f"{cap} bytes, quota {glob!r})",
            )
        held.update(new)
        return _Reservation(held, list(new))

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
        out.update({ns: sum(held.values()) for ns, held in self._held.items()})
        return out


class _Reservation:
    """Digests added to a namespace's usage by :meth:`Quotas.admit`; :meth:`cancel` undoes."""

    def __init__(self, held: dict[Digest, int] | None, added: list[Digest]) -> None:
        self._held = held
        self._added = added

    def cancel(self) -> None:
        if self._held is not None:
            for d in self._added:
                self._held.pop(d, None)
        self._added = []
