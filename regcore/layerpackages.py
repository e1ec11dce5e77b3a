"""What an image layer installs: its OS release and OS package databases (for a Trivy server).

A Trivy server scans what a client found in an image, not the image itself: the client sends,
per layer, the OS and the packages it read (Trivy's ``BlobInfo``). :func:`analyze_layer` reads
one layer (a tar, gzip-compressed or not, from a file) and returns :class:`LayerFacts`:

- the OS from ``etc/os-release`` or ``usr/lib/os-release`` (``ID`` -> family, ``VERSION_ID``);
- Alpine packages from ``lib/apk/db/installed`` (``P:`` name, ``V:`` version, ``o:`` origin,
  ``A:`` arch);
- Debian/Ubuntu packages from ``var/lib/dpkg/status`` and ``var/lib/dpkg/status.d/*``
  (installed ones only; ``epoch:version-revision`` split as Trivy does; ``Source:`` with its
  own version when given);
- whiteout files (``.wh.<name>``) and opaque directories (``.wh..wh..opq``), so a later layer
  can delete what an earlier one installed.

Language packages are not read (Trivy's own analyzers would be needed). A file larger than
:data:`MAX_DB_BYTES` is skipped. Raises ValueError for a layer that is not a (gzip) tar
(zstd layers included: they are reported, not read).
"""

from __future__ import annotations

import gzip
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["LayerFacts", "analyze_layer", "parse_apk", "parse_dpkg", "parse_os_release"]

MAX_DB_BYTES = 64 * 1024 * 1024
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
APK_DB = "lib/apk/db/installed"
DPKG_DB = "var/lib/dpkg/status"
DPKG_DIR = "var/lib/dpkg/status.d/"
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass
class LayerFacts:
    """One layer's findings, ready for Trivy's ``BlobInfo`` (:meth:`blob_info`)."""

    os: dict[str, str] | None = None
    package_infos: list[dict[str, Any]] = field(default_factory=list)
    whiteout_files: list[str] = field(default_factory=list)
    opaque_dirs: list[str] = field(default_factory=list)

    @property
    def package_count(self) -> int:
        return sum(len(p["packages"]) for p in self.package_infos)

    def blob_info(self, digest: str, diff_id: str) -> dict[str, Any]:
        """Trivy's ``trivy.cache.v1.BlobInfo`` (JSON field names of rpc/cache/service.proto)."""
        info: dict[str, Any] = {
            "schema_version": 2,
            "digest": digest,
            "diff_id": diff_id,
            "package_infos": self.package_infos,
            "whiteout_files": self.whiteout_files,
            "opaque_dirs": self.opaque_dirs,
        }
        if self.os is not None:
            info["os"] = self.os
        return info


def parse_os_release(text: str) -> dict[str, str] | None:
    """``{"family": ID, "name": VERSION_ID}`` of an os-release file, or None."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"').strip("'")
    family = values.get("ID", "").lower()
    if not family:
        return None
    return {"family": family, "name": values.get("VERSION_ID", "")}


def parse_apk(text: str) -> list[dict[str, Any]]:
    """Packages of an apk ``installed`` database."""
    out: list[dict[str, Any]] = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if len(line) > 2 and line[1] == ":":
                fields.setdefault(line[0], line[2:])
        if "P" in fields and "V" in fields:
            out.append(
                {
                    "name": fields["P"],
                    "version": fields["V"],
                    "src_name": fields.get("o", fields["P"]),
                    "src_version": fields["V"],
                    "arch": fields.get("A", ""),
                }
            )
    return out


def _deb_version(value: str) -> dict[str, Any]:
    epoch, sep, rest = value.partition(":")
    if not sep:
        epoch, rest = "0", value
    version, dash, release = rest.rpartition("-")
    if not dash:
        version, release = rest, ""
    return {"epoch": int(epoch) if epoch.isdigit() else 0, "version": version, "release": release}


def parse_dpkg(text: str) -> list[dict[str, Any]]:
    """Installed packages of a dpkg status database."""
    out: list[dict[str, Any]] = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line[:1] in (" ", "\t"):
                continue
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if "Package" not in fields or "Version" not in fields:
            continue
        if "Status" in fields and "installed" not in fields["Status"].split():
            continue
        pkg = {"name": fields["Package"], **_deb_version(fields["Version"])}
        source = fields.get("Source", fields["Package"])
        src_name, _, src_version = source.partition(" ")
        src = (
            _deb_version(src_version.strip("()"))
            if src_version
            else _deb_version(fields["Version"])
        )
        pkg.update(
            {
                "src_name": src_name,
                "src_version": src["version"],
                "src_release": src["release"],
                "src_epoch": src["epoch"],
                "arch": fields.get("Architecture", ""),
            }
        )
        out.append(pkg)
    return out


def _open(fileobj: BinaryIO) -> BinaryIO:
    head = fileobj.read(4)
    fileobj.seek(0)
    if head.startswith(_ZSTD_MAGIC):
        raise ValueError("zstd-compressed layers are not analyzed")
    if head.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=fileobj)  # type: ignore[return-value]
    return fileobj


def analyze_layer(path: str | Path) -> LayerFacts:
    """Read one layer file (see the module docstring). Raises ValueError."""
    facts = LayerFacts()
    with open(path, "rb") as raw:
        try:
            with tarfile.open(fileobj=_open(raw), mode="r|") as tar:
                for member in tar:
                    _visit(tar, member, facts)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ValueError(f"layer is not a readable tar ({exc})") from None
    return facts


def _visit(tar: tarfile.TarFile, member: tarfile.TarInfo, facts: LayerFacts) -> None:
    name = member.name.removeprefix("./").lstrip("/")
    base = name.rsplit("/", 1)[-1]
    if base == ".wh..wh..opq":
        facts.opaque_dirs.append(name[: -len(base)] or "/")
        return
    if base.startswith(".wh."):
        facts.whiteout_files.append(name[: -len(base)] + base[4:])
        return
    if not member.isfile() or member.size > MAX_DB_BYTES:
        return
    if name in OS_RELEASE or name == APK_DB or name == DPKG_DB or name.startswith(DPKG_DIR):
        handle = tar.extractfile(member)
        if handle is None:
            return
        text = handle.read().decode("utf-8", "replace")
        if name in OS_RELEASE:
            facts.os = parse_os_release(text) or facts.os
        elif name == APK_DB:
            facts.package_infos.append({"file_path": name, "packages": parse_apk(text)})
        else:
            facts.package_infos.append({"file_path": name, "packages": parse_dpkg(text)})
