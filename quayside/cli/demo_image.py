"""``quayside demo-image DIR``: write a tiny OCI image layout, offline, for a first push.

The work is :func:`quayside.demoimage.write_demo_layout`; this module declares the command.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import rich_click as click


@click.command("demo-image")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--tag", default="latest", show_default=True, help="tag in the layout's index")
@click.option(
    "--push-to",
    default="127.0.0.1:5000/team/app:1.0",
    show_default=True,
    metavar="HOST:PORT/REPO:TAG",
    help="where the printed skopeo command pushes (nothing is pushed)",
)
def command(directory: Path, tag: str, push_to: str) -> None:
    """Write a tiny OCI image (one layer, /hello.txt) into the OCI layout DIR.

    Works offline; the same tag always has the same digest. Push it with the skopeo command
    it prints, e.g. to the origin that `quayside run` starts.
    """
    from quayside.demoimage import write_demo_layout

    image = write_demo_layout(directory, tag)
    source = shlex.quote(f"oci:{directory}:{tag}")
    click.echo(f"wrote {image.digest} ({image.size} bytes) as {directory}:{tag}")
    click.echo(f"push: skopeo copy --dest-tls-verify=false {source} docker://{push_to}")
