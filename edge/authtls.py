"""TLS for the edge (``tls:`` in its config): the listener's context, the peer client's
context, and the client-certificate check of the peer endpoint.

- :func:`server_context`: HTTPS with ``tls.certificate``/``tls.key`` (TLS 1.2 or
  ``tls.minimumtls``). With ``tls.clientcas`` the handshake *asks* every client for a
  certificate and verifies one that is given against those CAs (``CERT_OPTIONAL``): pulling
  clients (docker, containerd, skopeo) send none and are served as before, while the peer
  endpoint (:func:`has_client_certificate`) refuses a caller without a verified one. A
  certificate that fails verification fails the handshake.
- :func:`peer_client_context`: what this node uses towards other nodes' peer endpoints: their
  server certificates verified against ``tls.peer.cas`` (default ``tls.clientcas``), and
  ``tls.peer.certificate``/``key`` presented when asked. None when nothing is configured
  (the system's defaults apply).

A plain-HTTP request to the TLS port is answered as Go's net/http answers it, ``400 Client
sent an HTTP request to an HTTPS server.``, and closed (nothing served; a client that sends
nothing is closed after a few seconds): :mod:`regcore.tlssniff`, through
``regcore.serving.serve_app``. Raises ``ssl.SSLError``/``OSError`` for unusable files.
"""

from __future__ import annotations

import ssl

from aiohttp import web

from edge.accessconfig import EdgeTLSConfig

__all__ = ["has_client_certificate", "peer_client_context", "server_context"]


def _minimum(ctx: ssl.SSLContext, minimum: str) -> None:
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if minimum in ("tls1.3", "tls13") else ssl.TLSVersion.TLSv1_2
    )


def server_context(tls: EdgeTLSConfig) -> ssl.SSLContext | None:
    """The listener's context, or None for plain HTTP (see the module docstring)."""
    if tls.certificate is None or tls.key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls.certificate, tls.key)
    _minimum(ctx, tls.minimumtls)
    if tls.clientcas:
        for ca in tls.clientcas:
            ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def peer_client_context(tls: EdgeTLSConfig) -> ssl.SSLContext | None:
    """The context for this node's requests to peers, or None (see the module docstring)."""
    if not tls.peer_cas and tls.peer_certificate is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    for ca in tls.peer_cas:
        ctx.load_verify_locations(ca)
    if tls.peer_certificate is not None and tls.peer_key is not None:
        ctx.load_cert_chain(tls.peer_certificate, tls.peer_key)
    _minimum(ctx, tls.minimumtls)
    return ctx


def has_client_certificate(request: web.BaseRequest) -> bool:
    """Whether the caller presented a client certificate the handshake verified."""
    transport = request.transport
    if transport is None:
        return False
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return False
    try:
        return bool(ssl_object.getpeercert())
    except ValueError:  # handshake not done
        return False
