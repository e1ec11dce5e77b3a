"""Typed application keys shared by the origin's handler modules (no module-level state)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from origin.repository import Repositories
from regcore.storage.interfaces import BlobStore
from regcore.storage.layout import Layout

CONFIG: web.AppKey[Any] = web.AppKey("origin_config", object)  # regcore.config.OriginConfig
LAYOUT: web.AppKey[Layout] = web.AppKey("origin_layout", Layout)
STORE: web.AppKey[BlobStore] = web.AppKey("origin_store", BlobStore)
REPOS: web.AppKey[Repositories] = web.AppKey("origin_repos", Repositories)
# Set by origin.app: an OriginMetrics instance (counters the handlers bump), the uploads
# manager (origin.uploads.Uploads), and the read-only flag.
METRICS: web.AppKey[Any] = web.AppKey("origin_metrics", object)
UPLOADS: web.AppKey[Any] = web.AppKey("origin_uploads", object)
READONLY: web.AppKey[bool] = web.AppKey("origin_readonly", bool)
DELETE_ENABLED: web.AppKey[bool] = web.AppKey("origin_delete_enabled", bool)
MAX_MANIFEST_BYTES: web.AppKey[int] = web.AppKey("origin_max_manifest_bytes", int)
# origin.ops.OriginOps: write guard, quotas, immutability, pull times, gc, retention.
OPS: web.AppKey[Any] = web.AppKey("origin_ops", object)
