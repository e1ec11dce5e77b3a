"""A slow link for fault injection: an HTTP forward proxy that paces blob bodies.

Run as its own process (so pacing never competes with the test's event loop)::

    python -m harness.slowproxy --upstream http://127.0.0.1:5000 --rate 12MiB [--port 0]

It forwards every request (any method, headers, query string, body) to ``--upstream`` and
streams the answer back. Bodies of ``GET`` requests whose path contains ``--match`` (default
``/blobs/``) are paced to ``--rate`` bytes per second (``0``: unpaced), after an optional
``--first-byte-delay``. Status, ``Content-Length`` and the other end-to-end headers pass
unchanged, so a client (the edge) sees the upstream's own answers, only slower. Once bound it
prints ``{"event": "listening", "url": ...}`` on stdout.

:class:`SlowProxy` launches it as a :class:`harness.service.Service` (kill/pause like any peer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from harness.service import ListeningLineService

_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host",
}  # fmt: skip
_CHUNK = 64 * 1024


def parse_rate(text: str) -> int:
    """``"12MiB"``, ``"512KiB"``, ``"1000"`` → bytes per second."""
    units = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2, "b": 1}
    low = text.strip().lower()
    for suffix, mult in units.items():
        if low.endswith(suffix):
            return int(float(low[: -len(suffix)]) * mult)
    return int(float(low))


async def _serve(upstream: str, port: int, rate: int, delay: float, match: str) -> None:
    from aiohttp import ClientSession, ClientTimeout, web

    session = ClientSession(auto_decompress=False, timeout=ClientTimeout(total=None))

    async def handle(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = await request.read() if request.can_read_body else None
        async with session.request(
            request.method,
            upstream + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as up:
            resp = web.StreamResponse(status=up.status, reason=up.reason)
            for key, value in up.headers.items():
                if key.lower() not in _HOP:
                    resp.headers.add(key, value)
            paced = request.method == "GET" and match in request.path and up.status < 300
            await resp.prepare(request)
            if request.method == "HEAD":
                return resp
            if paced and delay > 0:
                await asyncio.sleep(delay)
            start, sent = time.monotonic(), 0
            async for chunk in up.content.iter_chunked(_CHUNK):
                await resp.write(chunk)
                sent += len(chunk)
                if paced and rate > 0:
                    ahead = sent / rate - (time.monotonic() - start)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            await resp.write_eof()
            return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    print(json.dumps({"event": "listening", "url": f"http://127.0.0.1:{bound}"}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await session.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.slowproxy")
    parser.add_argument("--upstream", required=True, help="http://HOST:PORT to forward to")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", default="0", help="bytes/s for matching GET bodies (0: unpaced)")
    parser.add_argument("--first-byte-delay", type=float, default=0.0)
    parser.add_argument("--match", default="/blobs/", help="path substring of paced requests")
    args = parser.parse_args(argv)
    try:
        asyncio.run(
            _serve(
                args.upstream.rstrip("/"),
                args.port,
                parse_rate(args.rate),
                args.first_byte_delay,
                args.match,
            )
        )
    except KeyboardInterrupt:
        pass
    return 0


class SlowProxy(ListeningLineService):
    """Launcher for the proxy process; :attr:`url` is known once :meth:`start` returned."""

    log_name = "slowproxy.log"

    def __init__(
        self,
        upstream_url: str,
        *,
        rate: str | int = 0,
        first_byte_delay: float = 0.0,
        match: str = "/blobs/",
        workdir: str | Path | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        super().__init__(
            name="slowproxy", workdir=workdir, temp_prefix="qs-slow-", start_timeout=start_timeout
        )
        self.upstream_url = upstream_url
        self.rate = str(rate)
        self.first_byte_delay = first_byte_delay
        self.match = match

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "harness.slowproxy", "--upstream", self.upstream_url,
                "--rate", self.rate, "--first-byte-delay", str(self.first_byte_delay),
                "--match", self.match]  # fmt: skip

    def process_env(self) -> dict[str, str]:
        return {"PYTHONUNBUFFERED": "1"}


if __name__ == "__main__":
    sys.exit(main())
