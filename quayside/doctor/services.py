"""What the edge depends on: Redis and each upstream, reached from this host.

- ``redis``: ``PING`` (and the server's version from ``INFO``) at the edge config's
  ``redis.url`` within the timeout. The URL is shown without its password.
- ``upstream:<name>``: first a bare ``GET /v2/`` (reachable? which challenge?), then the edge's
  own dance with its configured credentials (:class:`regcore.client.RegistryClient`
  ``ping``: ``password``/``password_file`` or ``token_file``, the token realm, the retry with
  the token). Unreachable or refused credentials fail; credentials that the client would not
  send to the realm (another domain than the upstream: see
  :func:`regcore.client.auth.may_send_credentials`) warn, because pulls then go anonymous.

Nothing here prints a credential.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Any

import aiohttp
from yarl import URL

from quayside.doctor.network import explain
from quayside.doctor.results import Result
from regcore import USER_AGENT, errors
from regcore.client import RegistryClient, parse_challenges
from regcore.client.auth import may_send_credentials
from regcore.redaction import redact_url

if TYPE_CHECKING:
    from quayside.doctor.setup import EdgeConfig, UpstreamConfig

__all__ = ["check_redis", "check_upstream", "check_upstreams"]


async def check_redis(edge: EdgeConfig, *, timeout: float) -> Result:
    """The ``redis`` result for the edge config (skipped without ``redis.url``)."""
    url = edge.redis.url
    if url is None:
        return Result.skip("edge", "redis", "no redis.url: this edge runs alone")
    shown = redact_url(url)
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client = Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    try:
        async with asyncio.timeout(timeout * 2):
            await client.ping()
            info: Any = await client.info("server")
    except Exception as exc:  # any way Redis does not answer is the same finding
        return Result.fail(
            "edge",
            "redis",
            f"no answer from {shown}: {_redis_why(exc)}",
            "start Redis or fix redis.url (edges fall back to node-local fills: more upstream traffic)",
        )
    finally:
        await client.aclose()
    version = info.get("redis_version", "?") if isinstance(info, dict) else "?"
    return Result.ok("edge", "redis", f"PING answered by {shown} (redis {version})")


def _redis_why(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    text = str(exc).splitlines()[0] if str(exc) else ""
    return redact_url(text)[:160] if text else type(exc).__name__


async def check_upstreams(edge: EdgeConfig, *, timeout: float) -> list[Result]:
    """One ``upstream:<name>`` result per configured upstream (checked concurrently)."""
    return list(await asyncio.gather(*(check_upstream(u, timeout=timeout) for u in edge.upstreams)))


async def check_upstream(upstream: UpstreamConfig, *, timeout: float) -> Result:
    name = f"upstream:{upstream.name}"
    try:
        password, token = upstream.read_password(), upstream.read_token()
    except OSError as exc:
        return Result.fail(
            "edge",
            name,
            f"cannot read the credential file: {exc.strerror}",
            "make password_file/token_file readable by the edge's user",
        )
    has_credentials = bool(upstream.username or token)
    first = await _bare_ping(upstream.url, timeout)
    if isinstance(first, str):
        return Result.fail(
            "edge",
            name,
            f"{upstream.url} unreachable: {first}",
            "check the URL, DNS and firewall from the edge host; meanwhile only cached content is served",
        )
    status, challenge = first
    warn = ""
    if challenge is not None and challenge.scheme == "bearer" and challenge.realm:
        realm = URL(challenge.realm)
        if upstream.username and not may_send_credentials(URL(upstream.url), realm):
            warn = (
                f"credentials are not sent to the token realm {realm.host} (another domain"
                " or plain http): pulls go anonymous"
            )
    client = RegistryClient(
        upstream.url,
        username=upstream.username,
        password=password,
        token=token,
        connect_timeout=min(timeout, upstream.connect_timeout),
        read_timeout=min(timeout, upstream.read_timeout),
        retries=0,
    )
    try:
        async with asyncio.timeout(timeout * 3):
            await client.ping()
    except errors.Unauthorized:
        who = "the configured credentials" if has_credentials else "anonymous access"
        return Result.fail(
            "edge",
            name,
            f"{upstream.url} refused {who}",
            "fix username/password_file or token_file for this upstream"
            if has_credentials
            else "configure credentials (username + password_file, or token_file)",
        )
    except (errors.RegistryError, TimeoutError) as exc:
        detail = getattr(exc, "detail", None) or type(exc).__name__
        return Result.fail(
            "edge",
            name,
            f"{upstream.url}: {detail if isinstance(detail, str) else exc}"[:240],
            "check the upstream's health and the edge host's network",
        )
    finally:
        await client.close()
    how = _how(status, challenge, has_credentials)
    if warn:
        return Result.warn(
            "edge",
            name,
            f"{upstream.url} answers ({how}); {warn}",
            "put the realm on the upstream's domain or use a token_file",
        )
    return Result.ok("edge", name, f"{upstream.url} answers ({how})")


def _how(status: int, challenge: Any, has_credentials: bool) -> str:
    if status == 200 or challenge is None:
        return "no authentication"
    who = "configured credentials" if has_credentials else "anonymous"
    if challenge.scheme == "bearer":
        host = URL(challenge.realm).host if challenge.realm else "?"
        return f"token from {host}, {who}"
    return f"{challenge.scheme} auth, {who}"


async def _bare_ping(url: str, timeout: float) -> tuple[int, Any] | str:
    """``(status, first challenge or None)`` of ``GET /v2/`` without credentials, or why it
    failed (a string)."""
    ssl_ctx: Any = None if url.startswith("https://") else False
    try:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout),
            headers={"User-Agent": USER_AGENT},
            connector=aiohttp.TCPConnector(ssl=ssl_ctx),
        ) as session:
            async with session.get(url + "/v2/", allow_redirects=False) as resp:
                challenges = parse_challenges(resp.headers.getall("WWW-Authenticate", []))
                return resp.status, (challenges[0] if challenges else None)
    except (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError) as exc:
        return explain(exc)
