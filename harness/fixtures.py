"""pytest plugin: real servers and test images as fixtures.

Register once in ``tests/conftest.py``::

    pytest_plugins = ["harness.fixtures"]

Fixtures (all function-scoped; every process is stopped and every temp dir removed at teardown,
also when the test fails):

- ``docker_registry``: a started plain :class:`~harness.registry.DockerRegistry`.
- ``registry_factory``: ``registry_factory(**DockerRegistry kwargs)`` starts more (e.g. the
  reference proxy: ``registry_factory(proxy_remoteurl=docker_registry.url)``).
- ``redis_server``: a started :class:`~harness.redis.RedisServer` (``.url``).
- ``nginx_factory``: ``nginx_factory.proxy(upstream_url)`` / ``nginx_factory.static(dir)``;
  skips the test when nginx is not installed.
- ``image_factory``: an :class:`ImageFactory` (distinct seeds per call, so images never collide).
- ``tmp_layout``: a fresh, not yet existing directory path for an OCI layout.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.images import (
    DEFAULT_PLATFORMS,
    Flavour,
    Image,
    ImageIndex,
    KiB,
    Layer,
    Platform,
    make_image,
    make_index,
    make_layer,
)
from harness.nginx import Nginx
from harness.procs import running_processes
from harness.redis import RedisServer
from harness.registry import DockerRegistry


class ImageFactory:
    """Makes images with fresh seeds: two calls never return the same digests."""

    def __init__(self, start_seed: int = 1) -> None:
        self._seeds = itertools.count(start_seed * 100_000, 10_000)

    def layer(self, size_bytes: int = 64 * KiB) -> Layer:
        return make_layer(size_bytes, next(self._seeds))

    def image(
        self,
        *,
        flavour: Flavour = "oci",
        layer_sizes: Iterable[int] = (64 * KiB,),
        platform: Platform = Platform(),
        layers: Iterable[Layer] | None = None,
    ) -> Image:
        return make_image(
            layers,
            flavour=flavour,
            layer_sizes=layer_sizes,
            platform=platform,
            seed=next(self._seeds),
        )

    def index(
        self,
        *,
        flavour: Flavour = "oci",
        platforms: Iterable[Platform] = DEFAULT_PLATFORMS,
        layer_sizes: Iterable[int] = (16 * KiB,),
    ) -> ImageIndex:
        seed = next(self._seeds)
        for _ in range(len(tuple(platforms))):
            next(self._seeds)
        return make_index(flavour=flavour, platforms=platforms, layer_sizes=layer_sizes, seed=seed)


class NginxFactory:
    """Starts :class:`~harness.nginx.Nginx` instances under one temp dir; closes them all."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._started: list[Nginx] = []
        self._n = itertools.count()

    def proxy(self, upstream_url: str, **kwargs: Any) -> Nginx:
        nginx = Nginx.proxy(upstream_url, workdir=self.base / f"nginx-{next(self._n)}", **kwargs)
        self._started.append(nginx)
        return nginx.start()

    def static(self, directory: str | Path, **kwargs: Any) -> Nginx:
        nginx = Nginx.static(directory, workdir=self.base / f"nginx-{next(self._n)}", **kwargs)
        self._started.append(nginx)
        return nginx.start()

    def close(self) -> None:
        for nginx in reversed(self._started):
            nginx.close()


@pytest.fixture(autouse=True)
def _reap_leaked_processes() -> Iterator[None]:
    """Kill children a test started and did not stop (a leak would outlive the session).

    Autouse and function-scoped, so it is set up after wider-scoped fixtures (their servers
    count as "before") and torn down after the test's other fixtures have closed theirs.
    """
    before = {id(p) for p in running_processes()}
    yield
    for proc in running_processes():
        if id(proc) not in before:
            proc.kill()


def _require(binary: str) -> None:
    if shutil.which(binary) is None:
        pytest.skip(f"{binary} is not installed (make sysdeps)")


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[Callable[..., DockerRegistry]]:
    _require("docker-registry")
    started: list[DockerRegistry] = []
    counter = itertools.count()

    def start(**kwargs: Any) -> DockerRegistry:
        kwargs.setdefault("workdir", tmp_path / f"registry-{next(counter)}")
        registry = DockerRegistry(**kwargs)
        started.append(registry)
        return registry.start()

    try:
        yield start
    finally:
        for registry in reversed(started):
            registry.close()


@pytest.fixture
def docker_registry(registry_factory: Callable[..., DockerRegistry]) -> DockerRegistry:
    return registry_factory()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    _require("redis-server")
    server = RedisServer(workdir=tmp_path / "redis")
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture
def nginx_factory(tmp_path: Path) -> Iterator[NginxFactory]:
    _require("nginx")
    factory = NginxFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def image_factory() -> ImageFactory:
    return ImageFactory()


@pytest.fixture
def tmp_layout(tmp_path: Path) -> Path:
    return tmp_path / "layout"
