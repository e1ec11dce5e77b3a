"""Schema machinery behind :mod:`regcore.config`: check, coerce and layer configuration trees.

A schema is a nested dict whose leaves are :class:`Leaf` (a coercer, maybe an alias of a
sibling key) and whose inner nodes are sections. :func:`normalize` checks one source's data
against it; :class:`EnvIndex` turns environment variables into such a tree; :func:`load_layers`
merges file < environment < overrides; :func:`getter` reads the result by dotted path.

Guarantees: unknown keys and bad values raise :class:`ConfigError` naming the source and the
dotted key; ``None`` values mean "not given" in every source; later sources replace leaves
(lists and raw mappings included) and merge sections.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "EnvIndex",
    "Fixup",
    "Getter",
    "Leaf",
    "Raw",
    "SubKeyError",
    "empty_mapping",
    "frozen",
    "getter",
    "load_layers",
    "normalize",
    "typename",
]


def empty_mapping() -> Mapping[str, Any]:
    return MappingProxyType({})


class ConfigError(ValueError):
    """Bad configuration. ``key`` is the dotted path at fault, ``source`` where it came from."""

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        source: str | None = None,
        problem: str | None = None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.source = source
        self.problem = problem or message


class SubKeyError(ValueError):
    """Raised by a coercer for a problem below the key it was given (``subpath`` relative)."""

    def __init__(self, subpath: str, problem: str) -> None:
        super().__init__(f"{subpath}: {problem}")
        self.subpath = subpath
        self.problem = problem


@dataclass(frozen=True)
class Leaf:
    """A schema leaf: ``coerce(value) -> normalized`` raising ValueError; ``alias`` of a sibling;
    ``yaml_env``: an environment value is parsed as YAML before coercion."""

    coerce: Callable[[Any], Any]
    alias: str | None = None
    yaml_env: bool = False


def _err(source: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {problem}", key=key, source=source, problem=problem)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def typename(v: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean"}.get(
        type(v), type(v).__name__
    )


def normalize(data: Any, schema: Mapping[str, Any], path: str, source: str) -> dict[str, Any]:
    """Check ``data`` against ``schema``: unknown keys rejected, leaves coerced, aliases folded,
    ``None`` values dropped, ``{enabled: x}`` sections also accept a bare boolean."""
    if not isinstance(data, Mapping):
        raise _err(source, path or "<top level>", f"expected a mapping, got {typename(data)}")
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        sub = _join(path, key)
        spec = schema.get(key)
        if spec is None:
            raise ConfigError(
                f"{source}: unknown key '{sub}'", key=sub, source=source, problem="unknown key"
            )
        if value is None:
            continue
        if isinstance(spec, dict):
            if isinstance(value, bool) and "enabled" in spec:
                value = {"enabled": value}
            out[key] = _merge(out.get(key, {}), normalize(value, spec, sub, source))
            continue
        target = spec.alias or key
        if target in out:
            raise _err(source, sub, f"conflicts with '{_join(path, target)}'")
        out[target] = _coerce(spec, value, sub, source)
    return out


def _coerce(spec: Leaf, value: Any, key: str, source: str) -> Any:
    try:
        return spec.coerce(value)
    except ConfigError:
        raise
    except SubKeyError as e:
        sub = e.subpath if e.subpath.startswith("[") else "." + e.subpath
        raise _err(source, key + sub, e.problem) from e
    except (ValueError, TypeError) as e:
        raise _err(source, key, str(e)) from e


def _merge(base: dict[str, Any], upper: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of normalized trees; leaves (raw mappings and lists included) are replaced."""
    out = dict(base)
    for k, v in upper.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not isinstance(v, Raw):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


class Raw(dict):  # type: ignore[type-arg]
    """A mapping accepted as is (distribution sections we store but do not interpret)."""


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
    if isinstance(value, dict) and not isinstance(value, Raw):
        node[path[-1]] = _merge(node.get(path[-1], {}), value)
    else:
        node[path[-1]] = value


def _subschema(schema: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = schema
    for part in path:
        node = node[part]
    return node


class EnvIndex:
    """Environment variable names for every section and leaf of a schema.

    ``prefixes``: (``"REGISTRY_"``, subtree path) pairs, applied in order (later wins); within a
    prefix a section variable applies before its leaves. Variables starting with
    ``strict_prefix`` (and none of ``foreign_prefixes``) must be known.
    """

    def __init__(
        self,
        schema: Mapping[str, Any],
        prefixes: list[tuple[str, tuple[str, ...]]],
        *,
        strict_prefix: str,
        foreign_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.schema = schema
        self.strict_prefix = strict_prefix
        self.foreign_prefixes = foreign_prefixes
        entries: list[tuple[int, int, str, tuple[str, ...], Any]] = []
        for order, (prefix, base) in enumerate(prefixes):
            for rel, spec in self._walk(_subschema(schema, base), ()):
                name = prefix + "_".join(rel).upper()
                path = base + rel
                if isinstance(spec, Leaf) and spec.alias:
                    path = (*path[:-1], spec.alias)
                entries.append((order, len(rel), name, path, spec))
        entries.sort(key=lambda e: (e[0], e[1]))
        self.entries = tuple((name, path, spec) for _, _, name, path, spec in entries)
        names = [e[0] for e in self.entries]
        assert len(names) == len(set(names)), "environment names collide"
        self.names = frozenset(names)

    def _walk(self, node: Any, rel: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
        out: list[tuple[tuple[str, ...], Any]] = [(rel, node)] if rel else []
        if isinstance(node, dict):
            for k, v in node.items():
                out.extend(self._walk(v, (*rel, k)))
        return out

    def layer(self, environ: Mapping[str, str]) -> dict[str, Any]:
        """The environment's contribution as a normalized tree.

        Raises:
            ConfigError: an unknown strict-prefix variable, or a bad value.
        """
        for name in sorted(environ):
            if (
                name.startswith(self.strict_prefix)
                and name not in self.names
                and not name.startswith(self.foreign_prefixes)
            ):
                raise ConfigError(
                    f"environment variable {name}: unknown setting "
                    f"(known: {', '.join(sorted(n for n in self.names if n.startswith(self.strict_prefix)))})",
                    key=name,
                    source="environment",
                )
        tree: dict[str, Any] = {}
        for name, path, spec in self.entries:
            if name not in environ:
                continue
            raw = environ[name]
            source = f"environment variable {name}"
            dotted = ".".join(path)
            if isinstance(spec, dict) or spec.yaml_env:
                try:
                    value: Any = yaml.safe_load(raw) if raw.strip() else None
                except yaml.YAMLError as e:
                    raise _err(source, dotted, f"not valid YAML: {e}") from e
            else:
                value = raw
            if value is None or value == "":
                continue
            if isinstance(spec, dict):
                if isinstance(value, str) and isinstance(spec.get(value), dict):
                    value = {value: {}}  # REGISTRY_STORAGE=filesystem selects a driver
                elif isinstance(value, bool | str) and "enabled" in spec:
                    value = {"enabled": value}
                value = normalize(value, spec, dotted, source)
            else:
                value = _coerce(spec, value, dotted, source)
            _set_path(tree, path, value)
        return tree


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{"http.addr": x, "storage": {...}}`` -> nested dict; ``None`` values dropped."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        parts = tuple(str(key).split("."))
        if isinstance(value, Mapping) and not isinstance(value, Raw):
            value = _nest(value)
        _set_path(out, parts, value)
    return out


def _read_file(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror}", source=path) from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}", source=path) from e
    return {} if data is None else data


Fixup = Callable[[dict[str, Any], str], dict[str, Any]]


def load_layers(
    schema: Mapping[str, Any],
    env: EnvIndex,
    path: str | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any] | None,
    fixup: Fixup | None = None,
) -> dict[str, Any]:
    layers: list[tuple[str, dict[str, Any]]] = []
    if path is not None:
        layers.append((path, normalize(_read_file(path), schema, "", path)))
    layers.append(("environment", env.layer(environ)))
    if overrides:
        layers.append(("override", normalize(_nest(overrides), schema, "", "override")))
    merged: dict[str, Any] = {}
    for source, layer in layers:
        merged = _merge(merged, fixup(layer, source) if fixup else layer)
    return merged


Getter = Callable[..., Any]


def getter(tree: Mapping[str, Any]) -> Getter:
    def get(dotted: str, default: Any = None) -> Any:
        node: Any = tree
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    return get


def frozen(value: Any) -> Any:
    """Read-only deep copy of plain YAML data (mappings -> MappingProxyType, lists -> tuples)."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): frozen(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(frozen(v) for v in value)
    return value
