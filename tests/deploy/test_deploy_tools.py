"""Each file in deploy/ is accepted by the real tool that reads it: promtool (alert rules, their
unit tests, scrape config, the dashboard's queries), systemd-analyze, Kubernetes' own schemas,
the compose specification's schema, nginx; and what they say agrees with the code (metric names
the servers export, paths the units may write, the NodePort the node hosts.toml uses).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.deploy.deployfiles import (
    DEPLOY,
    k8s_documents,
    k8s_workloads,
    systemd_units,
)

BIN = Path(sys.executable).parent
PROM = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "quayside-dashboard.json"


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
        pytest.fail(f"{argv[0]} is not installed (make sysdeps installs it)")
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd)


# -- Prometheus and Grafana ------------------------------------------------------------------


def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    check = _run(["promtool", "check", "rules", str(PROM / "quayside-alerts.yml")])
    assert check.returncode == 0, check.stdout + check.stderr
    unit = _run(["promtool", "test", "rules", "quayside-alerts.test.yml"], cwd=PROM)
    assert unit.returncode == 0, unit.stdout + unit.stderr
    assert "SUCCESS" in unit.stdout


def test_scrape_config_passes_promtool() -> None:
    out = _run(["promtool", "check", "config", str(PROM / "scrape.yml")])
    assert out.returncode == 0, out.stdout + out.stderr


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) with Grafana's variables replaced by what Grafana sends."""
    subs = {"$__rate_interval": "5m", "$edge": ".*", "$origin": ".*"}
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for k, v in subs.items():
                expr = expr.replace(k, v)
            out.append((panel["title"], expr))
    return out


def test_dashboard_queries_parse_with_promtool(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 10
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:q{i}", "expr": q} for i, (_, q) in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    out = _run(["promtool", "check", "rules", str(path)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert {"Cache hit ratio", "Upstream amplification", "Stale serves (upstream failing)"} <= {
        t for t, _ in queries
    }


METRIC = re.compile(r"\b(quayside_(?:edge|origin)_[a-z0-9_]+)\b")


def referenced_metrics() -> set[str]:
    text = DASHBOARD.read_text() + (PROM / "quayside-alerts.yml").read_text()
    return set(METRIC.findall(text))


def exported_names(exposition: str) -> set[str]:
    """Sample names a scrape can return, from the exposition's TYPE lines."""
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M):
        names.add(name)
        if kind == "counter":
            names.add(name + "_total")
        if kind == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
    return names


def test_dashboard_and_rules_name_only_metrics_the_servers_export(server_group) -> None:
    origin = server_group.origin()
    edge = server_group.edge({"origin": origin.url})
    names: set[str] = set()
    for server in (origin, edge):
        import urllib.request

        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as resp:
            names |= exported_names(resp.read().decode())
    missing = sorted(m for m in referenced_metrics() if m not in names)
    assert not missing, f"dashboard/alerts use metrics no server exports: {missing}"
    assert len(referenced_metrics()) >= 12


# -- systemd -----------------------------------------------------------------------------


def test_systemd_units_verify_clean(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in (DEPLOY / "systemd").glob("*.service"):
        shutil.copy(unit, units / unit.name)
        exe = systemd_units()[unit.name]["Service.ExecStart"][0].split()[0]
        (root / exe.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / exe.lstrip("/")).write_text("#!/bin/sh\n")
        (root / exe.lstrip("/")).chmod(0o755)
    names = sorted(p.name for p in units.iterdir())
    out = _run(["systemd-analyze", "verify", f"--root={root}", *names])
    assert out.returncode == 0 and not out.stderr.strip() and not out.stdout.strip(), (
        out.stdout + out.stderr
    )


def _writable(keys: dict[str, list[str]]) -> list[str]:
    paths = " ".join(keys.get("Service.ReadWritePaths", [])).split()
    paths += [f"/var/lib/{d}" for v in keys.get("Service.StateDirectory", []) for d in v.split()]
    paths += [f"/var/cache/{d}" for v in keys.get("Service.CacheDirectory", []) for d in v.split()]
    return paths


def test_systemd_units_may_write_what_the_shipped_configs_write() -> None:
    from edge.config import load_edge_config
    from regcore.config import load_origin_config

    units = systemd_units()
    origin = load_origin_config(str(DEPLOY / "config/origin.yml"), {}, {})
    edge = load_edge_config(str(DEPLOY / "config/edge.yml"), {}, {})
    needs = {
        "quayside-origin.service": [origin.storage.rootdirectory],
        "quayside-edge.service": [edge.cache.dir],
    }
    for unit, paths in needs.items():
        keys = units[unit]
        assert keys["Service.ProtectSystem"] == ["strict"]
        allowed = _writable(keys)
        for path in paths:
            assert any(
                str(path).startswith(a.rstrip("/") + "/") or str(path) == a for a in allowed
            ), f"{unit} cannot write {path} (writable: {allowed})"


# -- Kubernetes ----------------------------------------------------------------------------


def test_kubernetes_manifests_pass_kubernetes_schemas() -> None:
    files = sorted(str(p) for p in (DEPLOY / "kubernetes").glob("*.yaml"))
    out = _run([str(BIN / "kubernetes-validate"), "-k", "1.31.0", "--strict", *files])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "failed" not in (out.stdout + out.stderr).lower()


def test_kubernetes_workloads_have_probes_limits_and_disruption_budgets() -> None:
    pdbs = [d for _, d in k8s_documents() if d["kind"] == "PodDisruptionBudget"]
    for _, workload in k8s_workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        for c in workload["spec"]["template"]["spec"]["containers"]:
            assert c.get("resources", {}).get("limits", {}).get("memory"), c["name"]
            assert c["resources"].get("requests"), c["name"]
            assert c.get("readinessProbe") and c.get("livenessProbe"), c["name"]
            if str(c["image"]).startswith("quayside"):
                for probe in ("readinessProbe", "livenessProbe"):
                    assert c[probe]["httpGet"]["path"] == "/healthz", (c["name"], probe)
        if str(workload["spec"]["template"]["spec"]["containers"][0]["image"]).startswith(
            "quayside"
        ):
            assert any(
                set(p["spec"]["selector"]["matchLabels"].items()) <= set(labels.items())
                for p in pdbs
            ), f"no PodDisruptionBudget selects {workload['metadata']['name']}"


def test_kubernetes_config_files_point_at_required_mounts() -> None:
    """A *_file the config needs lies on a mounted volume that is not optional."""
    from tests.deploy.deployfiles import k8s_config_files

    for _, workload in k8s_workloads():
        pod = workload["spec"]["template"]
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        mounts = [m for c in pod["spec"]["containers"] for m in c.get("volumeMounts", [])]
        for text in k8s_config_files(pod).values():
            for key, path in re.findall(r"(\w+):\s*(/[^/\s,}][^\s,}]*)", re.sub(r"#.*", "", text)):
                mount = next((m for m in mounts if path.startswith(m["mountPath"] + "/")), None)
                assert mount, f"{key}: {path} is on no volume mount"
                volume = volumes.get(mount["name"])  # None: a volumeClaimTemplate (always there)
                if volume is not None:
                    source = volume.get("secret") or volume.get("configMap")
                    assert source and not source.get("optional", False), f"{key}: {path} optional"
        for text in k8s_config_files(pod).values():
            assert "CHANGE_ME" not in text


def test_node_hosts_toml_uses_the_edge_node_port() -> None:
    ports = [
        p["nodePort"]
        for _, d in k8s_documents()
        if d["kind"] == "Service" and d["spec"].get("type") == "NodePort"
        for p in d["spec"]["ports"]
    ]
    hosts = tomllib.loads(
        (DEPLOY / "clients/containerd/kubernetes-node/docker.io/hosts.toml").read_text()
    )
    urls = list(hosts["host"])
    assert urls and all(re.fullmatch(r"http://127\.0\.0\.1:(\d+)", u) for u in urls)
    assert {int(u.rsplit(":", 1)[1]) for u in urls} <= set(ports)


# -- compose -------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    out = _run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(DEPLOY / "compose/docker-compose.yml"),
        ]
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_github_actions_example_matches_the_workflow_schema() -> None:
    out = _run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            str(DEPLOY / "ci/github-actions-push.yml"),
        ]
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_build_context_holds_the_dockerfile() -> None:
    services = yaml.safe_load((DEPLOY / "compose/docker-compose.yml").read_text())["services"]
    for svc in services.values():
        build = svc.get("build")
        if build:
            context = (DEPLOY / "compose" / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file()
            assert (context / "pyproject.toml").is_file()
