"""``quayside users``: the origin's htpasswd users (bcrypt), managed without a text editor.

``add``/``passwd`` read the password from stdin when it is not a terminal (``echo pw |
quayside users add alice``), else prompt twice; never from the command line, where ``ps`` and
shell history would keep it. The file is the one the origin's config names
(``auth.htpasswd.path``, or ``quayside.auth.tokenservice.users``), or ``--htpasswd FILE``;
writes are atomic (mode 0600) and a running origin picks them up without a restart.
"""

from __future__ import annotations

import sys
from pathlib import Path

import rich_click as click

_FILE_OPTIONS = [
    click.option("--config", metavar="FILE", help="the origin's config.yml (names the file)"),
    click.option(
        "--htpasswd",
        "htpasswd_path",
        metavar="FILE",
        envvar="REGISTRY_AUTH_HTPASSWD_PATH",
        help="htpasswd file (default: the one the config names)",
    ),
]


def _file_options(f):  # type: ignore[no-untyped-def]
    for option in reversed(_FILE_OPTIONS):
        f = option(f)
    return f


def _path(config: str | None, htpasswd_path: str | None) -> Path:
    if htpasswd_path:
        return Path(htpasswd_path)
    from regcore.auth.paths import auth_paths

    path = auth_paths(config, None).htpasswd
    if path is None:
        raise click.UsageError("no htpasswd file: pass --htpasswd FILE or a --config naming one")
    return path


def _entries(path: Path) -> dict[str, str]:
    from regcore.auth.htpasswd import HtpasswdError, read_entries

    try:
        return read_entries(path)
    except HtpasswdError as exc:
        raise click.ClickException(str(exc)) from None


def _read_password(confirm: bool = True) -> str:
    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=confirm)
    if not password:
        raise click.ClickException("empty password")
    return password


def _store(path: Path, entries: dict[str, str], user: str, password: str, cost: int) -> None:
    from regcore.auth.htpasswd import hash_password, write_entries

    try:
        entries[user] = hash_password(password, cost)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    write_entries(path, entries)


@click.group("users")
def command() -> None:
    """Users of the origin (htpasswd file, bcrypt)."""


@command.command("add")
@click.argument("name")
@click.option("--cost", type=click.IntRange(4, 16), default=10, show_default=True)
@_file_options
def add(name: str, cost: int, config: str | None, htpasswd_path: str | None) -> None:
    """Add user NAME (password from stdin or a prompt)."""
    from regcore.auth.principal import ROBOT_PREFIX

    if not name or ":" in name or name.startswith(ROBOT_PREFIX) or name.strip() != name:
        raise click.BadParameter("no ':', surrounding spaces or 'robot$' prefix", param_hint="NAME")
    path = _path(config, htpasswd_path)
    entries = _entries(path)
    if name in entries:
        raise click.ClickException(f"user {name!r} exists (use 'quayside users passwd')")
    _store(path, entries, name, _read_password(), cost)
    click.echo(f"added {name} to {path}")


@command.command("passwd")
@click.argument("name")
@click.option("--cost", type=click.IntRange(4, 16), default=10, show_default=True)
@_file_options
def passwd(name: str, cost: int, config: str | None, htpasswd_path: str | None) -> None:
    """Set a new password for NAME (its refresh tokens stop working)."""
    path = _path(config, htpasswd_path)
    entries = _entries(path)
    if name not in entries:
        raise click.ClickException(f"no user {name!r} in {path}")
    _store(path, entries, name, _read_password(), cost)
    click.echo(f"password of {name} changed")


@command.command("remove")
@click.argument("name")
@click.option("--dry-run", is_flag=True, help="say what would be removed, change nothing")
@_file_options
def remove(name: str, dry_run: bool, config: str | None, htpasswd_path: str | None) -> None:
    """Remove user NAME."""
    from regcore.auth.htpasswd import write_entries

    path = _path(config, htpasswd_path)
    entries = _entries(path)
    if name not in entries:
        raise click.ClickException(f"no user {name!r} in {path}")
    if dry_run:
        click.echo(f"would remove {name} from {path}")
        return
    del entries[name]
    write_entries(path, entries)
    click.echo(f"removed {name}")


@command.command("list")
@_file_options
def list_users(config: str | None, htpasswd_path: str | None) -> None:
    """List the users."""
    from rich.console import Console
    from rich.table import Table

    path = _path(config, htpasswd_path)
    table = Table("user", "hash", title=str(path))
    for user, hashed in sorted(_entries(path).items()):
        table.add_row(user, f"bcrypt cost {hashed[4:6]}")
    Console().print(table)
