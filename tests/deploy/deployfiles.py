"""What the files in deploy/ tell a machine to run, read the way each tool reads them.

Each :class:`ShippedCommand` is one server command line a deploy file starts (Dockerfile
ENTRYPOINT + CMD, a systemd unit's ExecStart, a compose service's command, a Kubernetes
container's args), with the environment and config files that file gives it.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
IMAGE = "quayside"


@dataclass(frozen=True)
class ShippedCommand:
    source: str  # file (and unit/service/container) it comes from
    argv: tuple[str, ...]  # as the file says, first element the quayside binary
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # path in the deployment -> text
    secrets: dict[str, str] = field(default_factory=dict)  # mount path -> Secret name

    @property
    def role(self) -> str:
        return "origin" if "origin" in self.argv[1:3] else "edge"

    def __hash__(self) -> int:
        return hash((self.source, self.argv))


def dockerfile_instructions(path: Path = DEPLOY / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            out = []  # a new stage: only the last one is the image
        out.append((word.upper(), rest.strip()))
    return out


def _exec_form(text: str) -> list[str]:
    return json.loads(text) if text.startswith("[") else shlex.split(text)


def dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in instructions:
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def dockerfile_commands() -> Iterator[ShippedCommand]:
    ins = dockerfile_instructions()
    entry = next(_exec_form(r) for w, r in reversed(ins) if w == "ENTRYPOINT")
    cmd = next(_exec_form(r) for w, r in reversed(ins) if w == "CMD")
    files = {f"/etc/quayside/{n}": (DEPLOY / "config" / n).read_text() for n in image_configs()}
    env = dockerfile_env(ins)
    yield ShippedCommand("Dockerfile CMD", (*entry, *cmd), env, files)
    origin = ("origin", "serve", "--config", "/etc/quayside/origin.yml")
    yield ShippedCommand(
        "Dockerfile (origin role, as its header says)", (*entry, *origin), env, files
    )


def image_configs() -> list[str]:
    """Names of deploy/config files the Dockerfile copies into /etc/quayside/."""
    names: list[str] = []
    for word, rest in dockerfile_instructions():
        if word == "COPY" and rest.rstrip("/").endswith("/etc/quayside"):
            names += [Path(p).name for p in shlex.split(rest)[:-1] if not p.startswith("--")]
    return names


def systemd_units() -> dict[str, dict[str, list[str]]]:
    """unit file name -> {"Section.Key": [values...]}."""
    units: dict[str, dict[str, list[str]]] = {}
    for path in sorted((DEPLOY / "systemd").glob("*.service")):
        section, keys = "", {}
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, value = line.partition("=")
            keys.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
        units[path.name] = keys
    return units


def systemd_commands() -> Iterator[ShippedCommand]:
    for name, keys in systemd_units().items():
        argv = tuple(shlex.split(keys["Service.ExecStart"][0]))
        cfg = next((a for a in argv if a.startswith("/etc/quayside/")), None)
        files = {cfg: (DEPLOY / "config" / Path(cfg).name).read_text()} if cfg else {}
        yield ShippedCommand(f"systemd {name}", argv, {}, files)


def compose_services() -> dict[str, dict]:
    return yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())["services"]


def compose_commands() -> Iterator[ShippedCommand]:
    for name, svc in compose_services().items():
        if str(svc.get("image", "")).split(":")[0] == IMAGE:
            env = svc.get("environment") or {}
            configs = compose_top("configs")
            files = {
                c["target"]: (DEPLOY / "compose" / configs[c["source"]]["file"]).read_text()
                for c in svc.get("configs", [])
            }
            names = svc.get("secrets", [])
            assert len(names) <= 1, "one compose secret per service is what tests/deploy maps"
            secrets = {"/run/secrets": names[0]} if names else {}
            argv = (IMAGE, *svc["command"])
            yield ShippedCommand(f"compose {name}", argv, dict(env), files, secrets)


def compose_top(key: str) -> dict:
    return yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text()).get(key) or {}


def k8s_documents() -> Iterator[tuple[str, dict]]:
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


def k8s_workloads() -> Iterator[tuple[str, dict]]:
    for name, doc in k8s_documents():
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            yield name, doc


def k8s_configmaps() -> dict[str, dict[str, str]]:
    return {
        d["metadata"]["name"]: d["data"] for _, d in k8s_documents() if d["kind"] == "ConfigMap"
    }


def k8s_config_files(pod: dict) -> dict[str, str]:
    """Files a pod sees from ConfigMaps: mount path -> text."""
    maps, volumes = k8s_configmaps(), {v["name"]: v for v in pod["spec"].get("volumes", [])}
    files: dict[str, str] = {}
    for container in pod["spec"]["containers"]:
        for mount in container.get("volumeMounts", []):
            vol = volumes.get(mount["name"], {})
            if "configMap" in vol and "subPath" in mount:
                files[mount["mountPath"]] = maps[vol["configMap"]["name"]][mount["subPath"]]
    return files


def k8s_secret_mounts(pod: dict) -> dict[str, str]:
    """Secrets a pod mounts: mount path -> secret name."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    return {
        m["mountPath"]: volumes[m["name"]]["secret"]["secretName"]
        for c in pod["spec"]["containers"]
        for m in c.get("volumeMounts", [])
        if "secret" in volumes.get(m["name"], {})
    }


def k8s_commands() -> Iterator[ShippedCommand]:
    for file, doc in k8s_workloads():
        pod = doc["spec"]["template"]
        for c in pod["spec"]["containers"]:
            if str(c["image"]).split(":")[0] == IMAGE:
                env = {e["name"]: e.get("value", "pod-0") for e in c.get("env", [])}
                args = [_expand(a, env) for a in c["args"]]
                src = f"kubernetes {file} {doc['metadata']['name']}/{c['name']}"
                yield ShippedCommand(
                    src, (IMAGE, *args), {}, k8s_config_files(pod), k8s_secret_mounts(pod)
                )


def _expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of container args."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), ""), arg)


def all_commands() -> list[ShippedCommand]:
    return [
        *dockerfile_commands(),
        *systemd_commands(),
        *compose_commands(),
        *k8s_commands(),
    ]
