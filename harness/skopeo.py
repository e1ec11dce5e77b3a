"""skopeo (1.9) as a real client: copy, push an OCI layout, pull to a layout, inspect raw.

Every call uses ``--insecure-policy``, plain HTTP to registries (``--src-tls-verify=false``,
``--dest-tls-verify=false``), a wall-clock timeout, and raises :class:`SkopeoError` carrying
skopeo's stderr on failure.

What skopeo does with manifest types (measured with skopeo 1.9.3 against docker-registry 2.8.2;
tests/harness/test_skopeo.py pins it):

- ``oci:DIR:TAG -> docker://`` pushes OCI manifests and OCI indexes byte-for-byte (same digest),
  with or without ``--preserve-digests``.
- An OCI layout whose ``index.json`` descriptor has a *Docker* media type cannot be pushed:
  skopeo 1.9's ``oci:`` source only resolves tags on OCI-typed descriptors and fails with
  ``no descriptor found for reference "TAG"``.
- Docker schema2 manifests and Docker manifest lists go out unchanged from skopeo's ``dir:``
  format instead (:func:`harness.layouts.write_dir`; ``dir:`` guesses the type from the bytes).
  :func:`push` picks the right source for an :mod:`harness.images` item.
- ``docker:// -> oci:DIR`` converts Docker schema2 (and lists) to OCI: new digests. With
  ``--preserve-digests`` skopeo instead writes the Docker manifest unchanged into the layout
  under a Docker-typed descriptor, which skopeo itself then cannot read back by tag.
  For byte-exact pulls use ``dir:`` (:func:`pull_to_dir`) or :func:`inspect_raw`.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.images import Image, ImageIndex
from harness.layouts import write_dir, write_layout
from harness.procs import CommandError

SKOPEO_BIN = "skopeo"
DEFAULT_TIMEOUT = 120.0


class SkopeoError(CommandError):
    """skopeo exited non-zero or timed out; ``stderr`` holds its message."""

    @property
    def stderr(self) -> str:
        return self.output


def run(
    args: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT, env: dict[str, str] | None = None
) -> bytes:
    """Run ``skopeo --insecure-policy ARGS``; return stdout. Raises :class:`SkopeoError`."""
    cmd = [SKOPEO_BIN, "--insecure-policy", *args]
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, env=full_env, check=False)
    except subprocess.TimeoutExpired as exc:
        stderr = (exc.stderr or b"").decode("utf-8", "replace")
        raise SkopeoError(cmd, None, stderr) from exc
    if proc.returncode != 0:
        raise SkopeoError(cmd, proc.returncode, proc.stderr.decode("utf-8", "replace"))
    return proc.stdout


def copy(
    src: str,
    dst: str,
    *,
    multi_arch: str | None = None,
    preserve_digests: bool = False,
    src_creds: str | None = None,
    dest_creds: str | None = None,
    extra: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """``skopeo copy SRC DST`` (full transport refs, e.g. ``oci:/d:t``, ``docker://h/r:t``).

    ``multi_arch``: ``"system"`` (skopeo's default), ``"all"`` or ``"index-only"``.
    ``preserve_digests``: fail rather than convert a manifest. ``*_creds``: ``user:password``.
    """
    args = ["copy", "--src-tls-verify=false", "--dest-tls-verify=false"]
    if multi_arch:
        args.append(f"--multi-arch={multi_arch}")
    if preserve_digests:
        args.append("--preserve-digests")
    if src_creds:
        args.append(f"--src-creds={src_creds}")
    if dest_creds:
        args.append(f"--dest-creds={dest_creds}")
    args.extend(extra)
    run([*args, src, dst], timeout=timeout)


def push_layout(
    layout_dir: str | os.PathLike[str],
    tag: str,
    registry_host: str,
    repo: str,
    *,
    dest_tag: str | None = None,
    multi_arch: str = "all",
    preserve_digests: bool = True,
    extra: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """Push ``oci:LAYOUT:TAG`` to ``docker://HOST/REPO:DEST_TAG``; return the destination ref.

    Defaults push every platform of an index and refuse any manifest conversion, so what the
    registry serves is byte-identical to :mod:`harness.images` output.
    """
    dst = f"docker://{registry_host}/{repo}:{dest_tag or tag}"
    copy(
        f"oci:{os.fspath(layout_dir)}:{tag}",
        dst,
        multi_arch=multi_arch,
        preserve_digests=preserve_digests,
        extra=extra,
        timeout=timeout,
    )
    return dst


def push(
    item: Image | ImageIndex,
    registry_host: str,
    repo: str,
    tag: str,
    *,
    workdir: str | os.PathLike[str],
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """Push an :mod:`harness.images` image or index so the registry serves exactly its bytes.

    OCI items go through an OCI layout, Docker items through skopeo's ``dir:`` format (see the
    module docstring); all platforms, ``--preserve-digests``. ``workdir`` receives the source
    directory. Returns the destination ref.
    """
    dst = f"docker://{registry_host}/{repo}:{tag}"
    source_dir = Path(workdir) / f"src-{item.digest.split(':', 1)[1][:16]}"
    if item.flavour == "oci":
        write_layout(source_dir, {tag: item})
        src = f"oci:{source_dir}:{tag}"
    else:
        write_dir(source_dir, item)
        src = f"dir:{source_dir}"
    copy(src, dst, multi_arch="all", preserve_digests=True, timeout=timeout)
    return dst


def pull_to_layout(
    registry_host: str,
    repo: str,
    tag_or_digest: str,
    layout_dir: str | os.PathLike[str],
    *,
    dest_tag: str = "pulled",
    multi_arch: str = "all",
    preserve_digests: bool = False,
    extra: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Pull ``docker://HOST/REPO:TAG`` (or ``@sha256:...``) into ``oci:LAYOUT:DEST_TAG``.

    Docker schema2 content is converted to OCI by skopeo (digests change) unless
    ``preserve_digests`` is set, in which case such a pull raises :class:`SkopeoError`.
    Use a fresh directory per timed run: skopeo skips blobs already present.
    """
    sep = "@" if tag_or_digest.startswith("sha256:") else ":"
    Path(layout_dir).mkdir(parents=True, exist_ok=True)
    copy(
        f"docker://{registry_host}/{repo}{sep}{tag_or_digest}",
        f"oci:{os.fspath(layout_dir)}:{dest_tag}",
        multi_arch=multi_arch,
        preserve_digests=preserve_digests,
        extra=extra,
        timeout=timeout,
    )
    return Path(layout_dir)


def pull_to_dir(
    registry_host: str,
    repo: str,
    tag_or_digest: str,
    target_dir: str | os.PathLike[str],
    *,
    extra: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Pull into skopeo's ``dir:`` format: ``manifest.json`` holds the exact served bytes and
    each blob is a file named by its hex digest (single platform: skopeo's system default)."""
    sep = "@" if tag_or_digest.startswith("sha256:") else ":"
    Path(target_dir).mkdir(parents=True, exist_ok=True)
    copy(
        f"docker://{registry_host}/{repo}{sep}{tag_or_digest}",
        f"dir:{os.fspath(target_dir)}",
        extra=extra,
        timeout=timeout,
    )
    return Path(target_dir)


def _with_transport(ref: str) -> tuple[str, list[str]]:
    """Add ``docker://`` to a bare ``host/repo:tag`` and the TLS flag registry refs need."""
    if ref.startswith(("oci:", "dir:", "oci-archive:", "docker-archive:")):
        return ref, []
    if not ref.startswith("docker://"):
        ref = "docker://" + ref
    return ref, ["--tls-verify=false"]


def inspect_raw(ref: str, *, creds: str | None = None, timeout: float = 60.0) -> bytes:
    """Manifest bytes exactly as served for ``ref`` (``docker://`` added if no transport)."""
    ref, flags = _with_transport(ref)
    if creds:
        flags.append(f"--creds={creds}")
    return run(["inspect", "--raw", *flags, ref], timeout=timeout)


def inspect(ref: str, *, creds: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """``skopeo inspect`` JSON (digest, layers, architecture...) for a single-platform ref."""
    ref, flags = _with_transport(ref)
    if creds:
        flags.append(f"--creds={creds}")
    return json.loads(run(["inspect", *flags, ref], timeout=timeout))
