"""``quayside scan push IMAGE``: scan an image with a Trivy server, attach the report to it.

The Trivy server comes from ``--trivy-server URL`` (and ``--token-file``), else from the
origin's ``--config`` (``quayside.policies.trivy``: ``server``, ``token_file``, ``timeout``).
The image's layers are read here (OS and OS packages), the server scans them, and the report
(Trivy JSON) is pushed as a referrer of the image (of each platform, and of the index), where
the origin's and the edges' scan policies find it (:mod:`regcore.scanpush`). ``--dry-run``
scans and prints the summary without attaching anything. Exit status: 0; 1 when the Trivy
server is unreachable or refuses, or the registry refuses; 2 for usage errors.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import rich_click as click

from quayside.cli.storageopts import load_config, rich_progress


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise click.UsageError(f"cannot read the {what} file {path!r}: {exc.strerror}") from None


def _trivy_settings(
    server: str | None, token_file: str | None, timeout: float | None, config: str | None
) -> tuple[str, str | None, float]:
    trivy = load_config(config, None).policies.trivy if config else None
    url = server or (trivy.server if trivy else None)
    if not url:
        raise click.UsageError(
            "no Trivy server: pass --trivy-server URL or set quayside.policies.trivy.server"
        )
    token_path = token_file or (trivy.token_file if trivy else None)
    token = _read(token_path, "Trivy token") if token_path else None
    return url, token, timeout or (trivy.timeout if trivy else 120.0)


async def _run(
    image: str,
    trivy_url: str,
    token: str | None,
    timeout: float,
    plain_http: bool,
    creds: tuple[str | None, str | None],
    dry_run: bool,
    progress: Any,
) -> list[Any]:
    from regcore.client import RegistryClient
    from regcore.scanpush import parse_image, scan_push
    from regcore.trivyclient import TrivyServer

    try:
        base, repo, ref = parse_image(image, plain_http=plain_http)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    phases: dict[str, bool] = {}

    def advance(phase: str, amount: int, total: int) -> None:
        if phase not in phases:
            phases[phase] = True
            progress.phase(phase, total, unit="bytes" if phase.startswith("download") else "images")
        progress.advance(amount)

    username, password = creds
    async with (
        RegistryClient(base, username=username, password=password) as client,
        TrivyServer(trivy_url, token=token, timeout=timeout) as trivy,
    ):
        name = f"{base.split('//', 1)[1]}/{repo}"
        return await scan_push(
            client, trivy, repo, ref, name=name, dry_run=dry_run, advance=advance
        )


def _lines(outcomes: list[Any], dry_run: bool) -> list[str]:
    out = []
    for o in outcomes:
        found = ", ".join(f"{n} {sev}" for sev, n in sorted(o.severities.items())) or "no findings"
        where = o.platform or "image"
        attached = "not attached (--dry-run)" if dry_run else f"report {o.report_digest}"
        out.append(f"{where} {o.digest}: {o.packages} packages, {found}; {attached}")
        out += [f"  note: {n}" for n in o.notes]
    return out


@click.group("scan")
def command() -> None:
    """Vulnerability scans of images, attached to them as referrers."""


@command.command("push")
@click.argument("image")
@click.option("--trivy-server", metavar="URL", help="the Trivy server (trivy server --listen)")
@click.option("--token-file", metavar="FILE", help="file holding the Trivy server's token")
@click.option("--timeout", type=float, metavar="SECONDS", help="per Trivy call (default 120)")
@click.option("--config", metavar="FILE", help="the origin's config.yml (quayside.policies.trivy)")
@click.option("--plain-http", is_flag=True, help="reach the registry over http, not https")
@click.option("--username", metavar="NAME", help="registry user (with --password-file)")
@click.option("--password-file", metavar="FILE", help="file holding the registry password")
@click.option("--dry-run", is_flag=True, help="scan and report, attach nothing")
@click.option("--json", "as_json", is_flag=True, help="print the outcome as JSON")
def push(
    image: str,
    trivy_server: str | None,
    token_file: str | None,
    timeout: float | None,
    config: str | None,
    plain_http: bool,
    username: str | None,
    password_file: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Scan IMAGE (HOST[:PORT]/REPO[:TAG|@DIGEST]) with a Trivy server; attach the report."""
    from regcore import errors
    from regcore.trivyclient import TrivyError

    url, token, limit = _trivy_settings(trivy_server, token_file, timeout, config)
    if (username is None) != (password_file is None):
        raise click.UsageError("--username and --password-file go together")
    password = _read(password_file, "password") if password_file else None
    try:
        with rich_progress(enabled=not as_json) as progress:
            outcomes = asyncio.run(
                _run(image, url, token, limit, plain_http, (username, password), dry_run, progress)
            )
    except TrivyError as exc:
        raise click.ClickException(str(exc)) from None
    except errors.RegistryError as exc:
        raise click.ClickException(f"registry refused: {exc.code}: {exc.msg}") from None
    if as_json:
        click.echo(json.dumps([o.to_dict() for o in outcomes], indent=1, sort_keys=True))
        return
    for line in _lines(outcomes, dry_run):
        click.echo(line)
