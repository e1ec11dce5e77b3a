"""One doctor run: every check that applies to the setup, concurrently, in a stable order.

:func:`diagnose` runs, for what the :class:`~quayside.doctor.setup.Setup` holds:

1. ``config``: each config file loads as the server would load it;
2. ``origin`` / ``edge``: port, ``/v2/``, clock skew, ``/healthz``, ``/readyz``, listen
   address; then TLS for ``https://`` URLs (:mod:`quayside.doctor.network`,
   :mod:`quayside.doctor.tls`);
3. ``origin-storage`` / ``edge-cache``: writable, free space, inodes, cache bound
   (:mod:`quayside.doctor.storage`);
4. ``edge``: Redis and every upstream with its credentials (:mod:`quayside.doctor.services`);
5. ``tokens``: signing key, JWKS, trust bundle, a token end to end
   (:mod:`quayside.doctor.tokens`);
6. ``clients``: the client snippets (:mod:`quayside.doctor.hints`).

Groups run concurrently; results keep this order. A check that raises is reported as a failed
result naming the exception (the run always finishes), never hidden.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from quayside.doctor.hints import client_hints, clients_result
from quayside.doctor.network import check_endpoint, check_listen
from quayside.doctor.results import Report, Result
from quayside.doctor.services import check_redis, check_upstreams
from quayside.doctor.setup import Setup
from quayside.doctor.storage import Thresholds, check_storage
from quayside.doctor.tls import check_tls
from quayside.doctor.tokens import check_tokens

__all__ = ["diagnose"]


async def diagnose(
    setup: Setup,
    *,
    thresholds: Thresholds = Thresholds(),
    clock: Callable[[], float] = time.time,
) -> Report:
    """Run the checklist for ``setup`` (see the module docstring). Never raises for a
    finding; only for a cancelled run."""
    report = Report()
    report.add(setup.problems)
    t = setup.timeout
    jobs: list[tuple[str, Awaitable[Any]]] = []
    for role, url in (("origin", setup.origin_url), ("edge", setup.edge_url)):
        if url is not None:
            jobs.append((role, check_endpoint(role, url, timeout=t, clock=clock)))
            jobs.append(
                (role, check_tls(role, url, timeout=t, ca_file=setup.ca_file, origin=setup.origin))
            )
    if setup.origin is not None:
        http = setup.origin.http
        report_at = http.host or setup.origin_url
        jobs.append(("origin", _const(check_listen("origin", http.addr, report_at))))
    if setup.edge is not None:
        jobs.append(("edge", _const(check_listen("edge", setup.edge.listen, setup.edge.advertise))))
    if setup.origin is not None or setup.edge is not None:
        jobs.append(("storage", check_storage(setup.origin, setup.edge, thresholds)))
    if setup.edge is not None:
        jobs.append(("edge", check_redis(setup.edge, timeout=t)))
        jobs.append(("edge", check_upstreams(setup.edge, timeout=t)))
    if setup.origin is not None or setup.origin_url is not None:
        jobs.append(("tokens", check_tokens(setup.origin, setup.origin_url, setup.edge, timeout=t)))
    results = await asyncio.gather(*(_guard(group, job) for group, job in jobs))
    for found in results:
        report.add(found)
    if setup.edge_url is not None:
        report.add(clients_result(setup.edge_url))
        report.hints.extend(client_hints(setup.edge_url, setup.edge))
    return report


async def _const(result: Result) -> Result:
    return result


async def _guard(group: str, job: Awaitable[Any]) -> list[Result]:
    try:
        found = await job
    except Exception as exc:  # a crashed check is a finding too, and the run goes on
        return [
            Result.fail(
                group,
                "doctor",
                f"check crashed: {type(exc).__name__}: {exc}"[:240],
                "report this as a Quayside bug (quayside doctor --json shows the setup)",
            )
        ]
    return [found] if isinstance(found, Result) else list(found)
