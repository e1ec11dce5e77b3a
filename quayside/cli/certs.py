"""``quayside certs``: a small CA and server certificates, and how to make clients trust them.

``quayside certs init --hosts registry.local,edge.local,127.0.0.1 [--out ./certs]`` writes
``ca.crt``/``ca.key`` (reused when present) and ``server.crt``/``server.key`` for every host
(DNS names and IPs in subjectAltName), plus ``client/ca.crt`` (a directory holding only the CA:
what ``--cert-dir`` wants), and prints the origin's ``http.tls`` lines and the trust steps for
Docker (``certs.d``), containerd (``hosts.toml`` ``ca``), podman and skopeo (``--cert-dir``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import rich_click as click


@click.group("certs")
def command() -> None:
    """TLS certificates for the origin and the edges."""


@command.command("init")
@click.option("--hosts", required=True, help="comma-separated host names and IP addresses")
@click.option("--out", default="./certs", show_default=True, help="output directory")
@click.option("--port", default=5000, show_default=True, help="port used in the examples")
@click.option("--days", default=825, show_default=True, help="server certificate lifetime")
def init(hosts: str, out: str, port: int, days: int) -> None:
    """Create a CA (once) and a server certificate for HOSTS."""
    from regcore.auth.tlscerts import init_certs

    try:
        files = init_certs(out, hosts.split(","), days=days)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--hosts") from None
    client_dir = Path(out) / "client"
    client_dir.mkdir(exist_ok=True)
    shutil.copyfile(files.ca_cert, client_dir / "ca.crt")
    ca = files.ca_cert.resolve()
    first = f"{files.hosts[0]}:{port}"
    click.echo(f"{'created' if files.ca_created else 'reused'} CA {ca} (keep ca.key private)")
    click.echo(f"server certificate {files.cert.resolve()} for {', '.join(files.hosts)}")
    click.echo(
        f"""
Origin (config.yml):
  http:
    tls:
      certificate: {files.cert.resolve()}
      key: {files.key.resolve()}

Docker: copy the CA for each registry host:port
  sudo mkdir -p /etc/docker/certs.d/{first}
  sudo cp {ca} /etc/docker/certs.d/{first}/ca.crt

containerd (/etc/containerd/certs.d/{first}/hosts.toml):
  server = "https://{first}"
  [host."https://{first}"]
    ca = "{ca}"

podman / skopeo: point --cert-dir at a directory holding only the CA
  skopeo copy --dest-cert-dir {client_dir.resolve()} ... docker://{first}/team/app:1.0
  podman login --cert-dir {client_dir.resolve()} {first}
  (or copy it to /etc/containers/certs.d/{first}/ca.crt)"""
    )
