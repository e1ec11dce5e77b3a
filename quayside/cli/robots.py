"""``quayside robots``: robot accounts for CI (``robot$NAME`` + a secret shown once).

``create NAME --repos 'team/*' [--repos ...] [--push] [--expires 30d]`` prints the secret once
(only its SHA-256 is stored) and how to log in with it; ``list`` shows state and expiry;
``revoke NAME`` refuses it from then on (a running origin re-reads the store). Creations and
revocations go to the audit trail. Files: ``--config``/``--root`` as for the origin.
"""

from __future__ import annotations

import getpass

import rich_click as click


def _paths(config: str | None, root: str | None):  # type: ignore[no-untyped-def]
    from regcore.auth.paths import auth_paths

    return auth_paths(config, root)


def _audit(paths, action: str, name: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    from origin.audit import AuditLog
    from regcore.auth.config import AuditConfig

    log = AuditLog(AuditConfig(path=str(paths.audit)))
    try:
        log.record(
            action,
            actor=f"cli:{getpass.getuser()}",
            client="local",
            reason=f"robot {name}: {reason}",
        )
    finally:
        log.close()


def _store(paths):  # type: ignore[no-untyped-def]
    from regcore.auth.robots import RobotStore

    return RobotStore(paths.robots)


_LOCATION = [
    click.option("--config", metavar="FILE", help="the origin's config.yml"),
    click.option("--root", metavar="DIR", help="the origin's storage root (default ./data/origin)"),
]


def _location(f):  # type: ignore[no-untyped-def]
    for option in reversed(_LOCATION):
        f = option(f)
    return f


@click.group("robots")
def command() -> None:
    """Robot accounts for CI (push/pull by repository pattern, expiry, revocation)."""


@command.command("create")
@click.argument("name")
@click.option("--repos", "repos", multiple=True, required=True, help="repository glob (repeatable)")
@click.option("--push", is_flag=True, help="may push too (default: pull only)")
@click.option("--expires", metavar="AGE", help="lifetime: 30d, 12h, 2w (default: never)")
@_location
def create(
    name: str,
    repos: tuple[str, ...],
    push: bool,
    expires: str | None,
    config: str | None,
    root: str | None,
) -> None:
    """Create robot NAME and print its secret (shown once)."""
    from regcore.auth.paths import parse_age
    from regcore.auth.robots import RobotError, iso

    ttl = None
    if expires:
        try:
            ttl = parse_age(expires)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--expires") from None
    paths = _paths(config, root)
    try:
        robot, secret = _store(paths).create(name, repos, push=push, ttl=ttl)
    except RobotError as exc:
        raise click.ClickException(str(exc)) from None
    _audit(
        paths,
        "robot.create",
        name,
        f"repos={','.join(robot.repos)} push={push} expires={iso(robot.expires)}",
    )
    rights = "pull, push" if push else "pull"
    click.echo(
        f"robot${name} created (repos {', '.join(robot.repos)}; {rights}; "
        f"expires {iso(robot.expires)})"
    )
    click.echo("secret (shown once, store it in your CI's secret store):")
    click.echo(secret)
    click.echo(
        f"log in: echo \"$SECRET\" | docker login REGISTRY -u 'robot${name}' --password-stdin"
    )


@command.command("list")
@_location
def list_robots(config: str | None, root: str | None) -> None:
    """List robots with their patterns, rights and state."""
    import time

    from rich.console import Console
    from rich.table import Table

    from regcore.auth.robots import iso

    table = Table("login", "repositories", "rights", "state", "created", "expires")
    now = time.time()
    for r in _store(_paths(config, root)).list():
        table.add_row(
            f"robot${r.name}",
            ", ".join(r.repos),
            "pull, push" if r.push else "pull",
            r.state(now),
            iso(r.created),
            iso(r.expires),
        )
    Console().print(table)


@command.command("revoke")
@click.argument("name")
@click.option("--dry-run", is_flag=True, help="say what would be revoked, change nothing")
@_location
def revoke(name: str, dry_run: bool, config: str | None, root: str | None) -> None:
    """Revoke robot NAME (refused from now on; kept in the list)."""
    from regcore.auth.robots import RobotError

    paths = _paths(config, root)
    store = _store(paths)
    if dry_run:
        if store.get(name) is None:
            raise click.ClickException(f"no robot named {name!r}")
        click.echo(f"would revoke robot${name}")
        return
    try:
        store.revoke(name)
    except RobotError as exc:
        raise click.ClickException(str(exc)) from None
    _audit(paths, "robot.revoke", name, "revoked")
    click.echo(f"robot${name} revoked")
