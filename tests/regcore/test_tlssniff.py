"""regcore.tlssniff on asyncio's loop and on uvloop, in process: TLS clients are served as by
``web.SockSite`` (client address, client certificate), plain HTTP gets Go's 400, a silent
client and garbage are closed, and stopping the site leaves no task, reader or socket behind.

Each test runs its own loop (``asyncio.Runner(loop_factory=...)``) and records every call of
the loop's exception handler ("Task was destroyed but it is pending", a callback that raised):
there must be none.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp import web

from harness.clientcerts import issue_client_cert
from harness.tlsprobe import GO_MESSAGE, Probe, probe
from regcore import serving
from regcore.auth.tlscerts import CertFiles, init_certs
from regcore.tlssniff import PLAIN_HTTP_ANSWER, TLSSniffSite

FIRST_BYTE = 0.5
LOOPS = pytest.mark.parametrize(
    "loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)


class Certs:
    def __init__(self, tmp: Path) -> None:
        self.files: CertFiles = init_certs(tmp / "certs", ["127.0.0.1", "localhost"])
        self.client_cert = issue_client_cert(
            self.files.ca_cert, self.files.ca_key, tmp / "client", "edge-node"
        )

    def server(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.files.cert, self.files.key)
        ctx.load_verify_locations(self.files.ca_cert)
        ctx.verify_mode = ssl.CERT_OPTIONAL  # as the edge with tls.clientcas
        return ctx

    def client(self, *, cert: bool) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.files.ca_cert))
        if cert:
            ctx.load_cert_chain(*self.client_cert)
        return ctx


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("tlssniff"))


async def _whoami(request: web.Request) -> web.Response:
    transport = request.transport
    assert transport is not None
    ssl_object = transport.get_extra_info("ssl_object")
    peercert = ssl_object.getpeercert() if ssl_object is not None else None
    subject = dict(pair[0] for pair in peercert["subject"]) if peercert else {}
    return web.json_response(
        {
            "remote": request.remote,
            "secure": request.secure,
            "peername": transport.get_extra_info("peername")[0],
            "client_cn": subject.get("commonName"),
        }
    )


@asynccontextmanager
async def _serving(ctx: ssl.SSLContext) -> AsyncIterator[tuple[TLSSniffSite, int]]:
    app = web.Application()
    app.router.add_get("/whoami", _whoami)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    sock, _url = serving.bind("127.0.0.1", 0, tls=True)
    site = TLSSniffSite(runner, sock, ssl_context=ctx, first_byte_timeout=FIRST_BYTE)
    await site.start()
    try:
        yield site, sock.getsockname()[1]
    finally:
        await runner.cleanup()


def _run(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    scenario: Callable[[], Awaitable[None]],
) -> None:
    """Run ``scenario`` on a fresh loop; fail on anything the loop's handler was given and on
    tasks still pending at the end."""
    errors: list[dict[str, Any]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        await scenario()
        await asyncio.sleep(0.05)  # let closed transports finish
        assert asyncio.all_tasks() == {asyncio.current_task()}

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    assert errors == []


async def _probe(port: int, payload: bytes, timeout: float = 10.0) -> Probe:
    return await asyncio.to_thread(probe, "127.0.0.1", port, payload, timeout=timeout)


# -- TLS is served as before ----------------------------------------------------------------
@LOOPS
def test_tls_clients_keep_address_and_client_certificate(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], certs: Certs
) -> None:
    async def scenario() -> None:
        async with _serving(certs.server()) as (site, port):
            assert site.name == f"https://127.0.0.1:{port}"
            url = f"https://127.0.0.1:{port}/whoami"
            for cert, cn in ((True, "edge-node"), (False, None)):
                connector = aiohttp.TCPConnector(ssl=certs.client(cert=cert))
                async with aiohttp.ClientSession(connector=connector) as session:
                    for _ in range(2):  # keep-alive: the second request reuses the connection
                        async with session.get(url) as resp:
                            assert resp.status == 200
                            assert await resp.json() == {
                                "remote": "127.0.0.1",
                                "secure": True,
                                "peername": "127.0.0.1",
                                "client_cn": cn,
                            }

    _run(loop_factory, scenario)


@LOOPS
def test_a_failed_handshake_is_closed_quietly(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], certs: Certs
) -> None:
    async def scenario() -> None:
        async with _serving(certs.server()) as (_site, port):
            untrusting = ssl.create_default_context()  # the system CAs, not ours
            connector = aiohttp.TCPConnector(ssl=untrusting)
            async with aiohttp.ClientSession(connector=connector) as session:
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await session.get(f"https://127.0.0.1:{port}/whoami")
            # and the listener still serves
            connector = aiohttp.TCPConnector(ssl=certs.client(cert=False))
            async with aiohttp.ClientSession(connector=connector) as session:
                async with session.get(f"https://127.0.0.1:{port}/whoami") as resp:
                    assert resp.status == 200

    _run(loop_factory, scenario)


# -- what is not TLS ------------------------------------------------------------------------
@LOOPS
def test_plain_http_gets_gos_400_and_a_clean_close(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], certs: Certs
) -> None:
    async def scenario() -> None:
        async with _serving(certs.server()) as (_site, port):
            request = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8\r\n\r\n"
            got = await _probe(port, request)
            assert got.data == PLAIN_HTTP_ANSWER
            assert got.status_line == b"HTTP/1.0 400 Bad Request"
            assert got.body == GO_MESSAGE
            assert got.ended == "closed" and got.seconds < FIRST_BYTE
            # an HTTP client sees a response, not a reset
            async with aiohttp.ClientSession() as session:
                async with session.post(f"http://127.0.0.1:{port}/v2/", data=b"x" * 100) as resp:
                    assert resp.status == 400
                    assert resp.headers["Content-Type"].startswith("text/plain")
                    assert resp.headers["Connection"] == "close"
                    assert await resp.read() == GO_MESSAGE

    _run(loop_factory, scenario)


@LOOPS
def test_a_silent_client_is_closed_after_the_first_byte_timeout(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], certs: Certs
) -> None:
    async def scenario() -> None:
        async with _serving(certs.server()) as (site, port):
            got = await _probe(port, b"")
            assert got.data == b"" and got.ended == "closed"
            assert FIRST_BYTE * 0.8 <= got.seconds < FIRST_BYTE + 2
            assert site._waiting == {}

    _run(loop_factory, scenario)


@LOOPS
def test_garbage_is_closed_without_an_answer(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], certs: Certs
) -> None:
    async def scenario() -> None:
        async with _serving(certs.server()) as (_site, port):
            for junk in (b"\x00\x01\x02\x03 hello", b"\xff" * 64, b"ssh-2.0\r\n"):
                got = await _probe(port, junk)
                assert got.data == b"", junk
                assert got.ended in ("closed", "reset") and got.seconds < FIRST_BYTE

    _run(loop_factory, scenario)


# -- shutdown -------------------------------------------------------------------------------
@LOOPS
def test_stop_closes_waiting_connections_handshakes_and_the_listener(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], certs: Certs
) -> None:
    async def scenario() -> None:
        clients: list[socket.socket] = []
        async with _serving(certs.server()) as (site, port):
            silent = socket.create_connection(("127.0.0.1", port))
            half_hello = socket.create_connection(("127.0.0.1", port))
            half_hello.sendall(b"\x16\x03\x01\x02\x00\x01")  # a ClientHello cut short
            clients += [silent, half_hello]
            deadline = time.monotonic() + 5
            while not (len(site._waiting) == 1 and len(site._handshakes) == 1):
                assert time.monotonic() < deadline, "connections not seen"
                await asyncio.sleep(0.01)
        # runner.cleanup() has run: both are closed at once, nothing is accepted any more
        for client in clients:
            with client:
                client.settimeout(5)
                try:
                    assert client.recv(100) == b""
                except ConnectionResetError:
                    pass
        assert site._waiting == {} and site._handshakes == set()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()

    _run(loop_factory, scenario)
