"""Bearer tokens docker-registry accepts: an RSA key + self-signed cert and RS256 JWTs.

:class:`TokenIssuer` makes a key pair with the ``openssl`` CLI (no Python crypto dependency),
gives the ``auth.token`` section for :class:`harness.registry.DockerRegistry` (the cert is the
``rootcertbundle``) and signs JWTs whose header carries the cert in ``x5c``, which is how
distribution 2.8 finds the verification key. ``realm`` is whatever token endpoint the test runs
(the registry only puts it in its ``WWW-Authenticate`` challenge).
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

from harness.registry import TokenAuth


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """Signs registry tokens for ``service``; files live in ``workdir``."""

    def __init__(
        self,
        workdir: str | Path,
        *,
        service: str = "quayside-test",
        issuer: str = "quayside-test-issuer",
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.service = service
        self.issuer = issuer
        self.key_path = self.workdir / "token-key.pem"
        self.cert_path = self.workdir / "token-cert.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key_path),
             "-out", str(self.cert_path), "-days", "2", "-subj", f"/CN={issuer}"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert_path), "-outform", "DER"],
            check=True, capture_output=True, timeout=30,
        ).stdout  # fmt: skip
        self._x5c = base64.b64encode(der).decode()

    def auth(self, realm: str) -> TokenAuth:
        """The registry's ``auth.token`` section pointing clients at ``realm``."""
        return TokenAuth(
            realm=realm,
            service=self.service,
            issuer=self.issuer,
            rootcertbundle=str(self.cert_path),
        )

    def issue(self, subject: str, access: list[dict[str, Any]], *, ttl: int = 300) -> str:
        """A signed JWT granting ``access`` (``[{"type": "repository", "name": "a/b",
        "actions": ["pull"]}]``) for ``ttl`` seconds."""
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + ttl,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key_path)],
            input=signing_input.encode(), check=True, capture_output=True, timeout=30,
        ).stdout  # fmt: skip
        return f"{signing_input}.{_b64url(signature)}"

    @staticmethod
    def repo_access(repo: str, *actions: str) -> list[dict[str, Any]]:
        """``access`` claim for one repository (default action: pull)."""
        return [{"type": "repository", "name": repo, "actions": list(actions or ("pull",))}]
