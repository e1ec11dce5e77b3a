"""Reading OS releases and OS package databases out of image layers (for a Trivy server)."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from regcore.layerpackages import analyze_layer, parse_apk, parse_dpkg, parse_os_release

DPKG = """Package: libssl3
Status: install ok installed
Architecture: amd64
Source: openssl (3.0.11-1~deb12u2)
Version: 3.0.11-1~deb12u2
Description: Secure Sockets Layer toolkit
 continuation line: Version: 9.9

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2024a-0+deb12u1

Package: removed-pkg
Status: deinstall ok config-files
Version: 1.0-1

Package: bsdutils
Status: install ok installed
Source: util-linux
Version: 1:2.38.1-5+b1
"""


def _layer(tmp_path: Path, files: dict[str, bytes], *, compress: bool = True) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "layer"
    path.write_bytes(gzip.compress(buf.getvalue()) if compress else buf.getvalue())
    return path


def test_dpkg_installed_packages_with_epoch_and_source() -> None:
    pkgs = {p["name"]: p for p in parse_dpkg(DPKG)}
    assert set(pkgs) == {"libssl3", "tzdata", "bsdutils"}
    assert pkgs["libssl3"]["version"] == "3.0.11" and pkgs["libssl3"]["release"] == "1~deb12u2"
    assert pkgs["libssl3"]["src_name"] == "openssl" and pkgs["libssl3"]["src_version"] == "3.0.11"
    assert pkgs["bsdutils"]["epoch"] == 1 and pkgs["bsdutils"]["version"] == "2.38.1"
    assert pkgs["bsdutils"]["src_name"] == "util-linux" and pkgs["bsdutils"]["src_epoch"] == 1
    assert pkgs["tzdata"]["release"] == "0+deb12u1"


def test_apk_and_os_release() -> None:
    apk = "P:musl\nV:1.2.4-r2\nA:x86_64\no:musl\n\nP:libssl3\nV:3.1.4-r5\no:openssl\n"
    assert [(p["name"], p["src_name"]) for p in parse_apk(apk)] == [
        ("musl", "musl"),
        ("libssl3", "openssl"),
    ]
    assert parse_os_release('ID="debian"\nVERSION_ID="12"\n') == {"family": "debian", "name": "12"}
    assert parse_os_release("NAME=nothing\n") is None


@pytest.mark.parametrize("compress", [True, False])
def test_layer_facts_and_whiteouts(tmp_path: Path, compress: bool) -> None:
    path = _layer(
        tmp_path,
        {
            "./etc/os-release": b"ID=debian\nVERSION_ID=12\n",
            "var/lib/dpkg/status": DPKG.encode(),
            "var/lib/dpkg/status.d/extra": b"Package: x\nVersion: 1\n",
            "usr/share/.wh.doc": b"",
            "opt/app/.wh..wh..opq": b"",
        },
        compress=compress,
    )
    facts = analyze_layer(path)
    assert facts.os == {"family": "debian", "name": "12"}
    assert facts.package_count == 4
    assert facts.whiteout_files == ["usr/share/doc"] and facts.opaque_dirs == ["opt/app/"]
    info = facts.blob_info("sha256:" + "a" * 64, "sha256:" + "b" * 64)
    assert info["schema_version"] == 2 and info["os"]["family"] == "debian"


def test_unreadable_layers_raise(tmp_path: Path) -> None:
    path = tmp_path / "junk"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + b"0" * 100)
    with pytest.raises(ValueError, match="zstd"):
        analyze_layer(path)
    path.write_bytes(gzip.compress(b"not a tar" * 100))
    with pytest.raises(ValueError, match="not a readable tar"):
        analyze_layer(path)
