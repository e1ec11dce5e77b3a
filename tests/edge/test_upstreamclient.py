"""RegistryClient is an UpstreamClient: every protocol method exists with a compatible signature."""

from __future__ import annotations

import inspect

from edge.upstreamclient import UpstreamClient
from regcore.client import RegistryClient

PROTOCOL_METHODS = [
    name
    for name, value in vars(UpstreamClient).items()
    if not name.startswith("_") and inspect.isfunction(value)
]


def test_protocol_names_what_the_edge_calls() -> None:
    assert sorted(PROTOCOL_METHODS) == [
        "blob_stream",
        "close",
        "get_manifest",
        "head_blob",
        "head_manifest",
        "list_tags",
        "request",
    ]


def test_registry_client_implements_every_method_with_compatible_parameters() -> None:
    for name in PROTOCOL_METHODS:
        wanted = inspect.signature(getattr(UpstreamClient, name))
        impl = getattr(RegistryClient, name)
        got = inspect.signature(impl)
        assert inspect.iscoroutinefunction(impl) == inspect.iscoroutinefunction(
            getattr(UpstreamClient, name)
        ), name
        for param in wanted.parameters.values():
            assert param.name in got.parameters, (name, param.name)
            have = got.parameters[param.name]
            assert have.kind == param.kind, (name, param.name)
            assert have.default == param.default, (name, param.name)
        extra = [p for n, p in got.parameters.items() if n not in wanted.parameters]
        # anything the protocol does not name must be optional in the implementation
        assert all(p.default is not inspect.Parameter.empty for p in extra), (name, extra)
