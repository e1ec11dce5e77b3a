"""Structured logging: one JSON object per line, secrets redacted before any handler sees them.

``setup_logging("info")`` installs one handler on the root logger; every line looks like::

    {"ts": "2024-05-01T12:00:00.123Z", "level": "info", "logger": "quayside.edge",
     "msg": "fill done", "digest": "sha256:...", "bytes": 1234}

Fields passed with ``extra=`` become keys of the object. :class:`RedactingFilter` (attached to the
handler, so it sees records from every logger) rewrites the message and string extras through
:func:`regcore.redaction.redact`: URL credentials, ``Authorization:`` values,
``Bearer``/``Basic`` tokens, ``password=``/``token=``-style parameters and signed-URL
signatures become ``***``.
:class:`JSONAccessLogger` is aiohttp's ``access_log_class`` for the same format.

Cost: the access log runs once per request, so it is built to be cheap. ``redact`` first
checks (without a regex) whether the text could hold any secret it masks and returns it
unchanged when not; the access logger redacts its few fields itself, hands one pre-redacted
record to the handlers (no ``findCaller`` stack walk) and marks it so the filter does not redact
it again and the formatter does not rebuild its fields; the formatter reuses one JSON encoder
and renders the timestamp's date and time once per second.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from regcore.redaction import redact, redact_query, redact_value

__all__ = [
    "JSONAccessLogger",
    "StaticFieldsFilter",
    "JSONFormatter",
    "RedactingFilter",
    "TextFormatter",
    "setup_logging",
]

# A record attribute holding the access log's (already redacted) fields; see JSONAccessLogger.
_ACCESS = "_quayside_access"

_RESERVED = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName", _ACCESS}
)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (args folded in) and ``extra`` values through :func:`redact`.

    Attach it to handlers: a handler filter sees records propagated from every logger.
    Never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _ACCESS in record.__dict__:  # built redacted by JSONAccessLogger
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = redact(message)
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key not in _RESERVED:
                record.__dict__[key] = redact_value(value)
        return True


def _iso(created: float) -> str:
    dt = datetime.fromtimestamp(created, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class _Timestamps:
    """:func:`_iso`, with the date and time rendered once per second (rounding as datetime:
    to the microsecond, half to even)."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def iso(self, created: float) -> str:
        second = int(created)
        micro = round((created - second) * 1_000_000)
        if micro >= 1_000_000:
            second += 1
            micro -= 1_000_000
        if second != self._second or created < 0:
            if created < 0:
                return _iso(created)
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
            self._second = second
        return f"{self._prefix}{micro // 1000:03d}Z"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED}


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, extras, ``exc``.

    Extras that JSON cannot encode are written as ``str(value)``; newlines in messages stay
    escaped inside the string, so one record is always one line.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder = json.JSONEncoder(default=str, ensure_ascii=False, separators=(",", ":"))
        self._ts = _Timestamps()

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": self._ts.iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        access = record.__dict__.get(_ACCESS)
        if access is not None:  # JSONAccessLogger's fields: no other extras, no exception
            obj.update(access)
            return self._encoder.encode(obj)
        for k, v in _extras(record).items():
            obj.setdefault(k, v)
        if record.exc_info:
            obj["exc"] = redact("".join(traceback.format_exception(*record.exc_info)))
        elif record.exc_text:
            obj["exc"] = redact(record.exc_text)
        return self._encoder.encode(obj)


class TextFormatter(logging.Formatter):
    """``ts level logger: msg key=value ...`` for humans at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in _extras(record).items())
        line = f"{_iso(record.created)} {record.levelname.lower():<7} {record.name}: {record.getMessage()}"
        if fields:
            line += " " + fields
        if record.exc_info:
            line += "\n" + redact("".join(traceback.format_exception(*record.exc_info)))
        return line


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class StaticFieldsFilter(logging.Filter):
    """Adds ``fields`` (distribution's ``log.fields``) to every record, access lines included,
    without replacing a field the record has; with ``caller`` (``log.reportcaller``) also
    ``file`` (``path:line``) and ``func`` of the logging call. Never drops a record."""

    def __init__(self, fields: Mapping[str, Any], caller: bool = False) -> None:
        super().__init__()
        self.fields = {str(k): v for k, v in fields.items() if str(k) not in _RESERVED}
        self.caller = caller

    def filter(self, record: logging.LogRecord) -> bool:
        attrs = record.__dict__
        access = attrs.get(_ACCESS)
        if access is not None:
            attrs[_ACCESS] = {**self.fields, **access}
        elif self.caller:
            attrs.setdefault("file", f"{record.pathname}:{record.lineno}")
            attrs.setdefault("func", record.funcName)
        for k, v in self.fields.items():
            attrs.setdefault(k, v)
        return True


def setup_logging(
    level: str = "info",
    fmt: str = "json",
    stream: IO[str] | None = None,
    *,
    fields: Mapping[str, Any] | None = None,
    caller: bool = False,
) -> logging.Handler:
    """Configure the root logger: one stream handler with :class:`RedactingFilter` and the
    JSON (``fmt="json"``) or text formatter, plus :class:`StaticFieldsFilter` when ``fields``
    or ``caller`` are given. Idempotent: a handler installed by an earlier
    call is replaced, other handlers (pytest's capture) are left alone. Returns the handler.

    Raises:
        ValueError: unknown level or format.
    """
    lvl = _LEVELS.get(level.lower())
    if lvl is None:
        raise ValueError(f"unknown log level {level!r}: use debug, info, warning or error")
    if fmt not in ("json", "text"):
        raise ValueError(f"unknown log format {fmt!r}: use json or text")
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_quayside", False):
            root.removeHandler(h)
            h.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler._quayside = True  # type: ignore[attr-defined]
    handler.addFilter(RedactingFilter())
    if fields or caller:
        handler.addFilter(StaticFieldsFilter(fields or {}, caller))
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(lvl)
    return handler


class JSONAccessLogger(AbstractAccessLogger):
    """aiohttp ``access_log_class``: one ``info`` record per request on the given logger with
    ``method``, ``path`` (query secrets masked), ``status``, ``bytes`` (bytes aiohttp wrote,
    headers included, like its ``%b``), ``content_length`` (the declared body length or
    ``None``), ``duration_ms``, ``remote``, ``user_agent``. Pass ``access_log=logging.getLogger(
    "quayside.access")`` to ``web.AppRunner``/``run_app`` alongside this class.

    Each request makes exactly one record, already redacted (the same values the
    :class:`RedactingFilter` would produce) and carrying its fields as record attributes like
    ``extra=`` would; it skips ``findCaller`` (``pathname``/``lineno`` name this module).
    """

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        url = request.rel_url
        path = url.path
        query = url.raw_query_string
        if query:
            path += "?" + redact_query(query)
        method = request.method
        status = response.status
        remote = request.remote
        user_agent = request.headers.get("User-Agent")
        fields: dict[str, Any] = {
            "method": redact(method),
            "path": redact(path),
            "status": status,
            "bytes": response.body_length,
            "content_length": response.content_length,
            "duration_ms": round(time * 1000, 3),
            "remote": redact(remote) if remote else remote,
            "user_agent": redact(user_agent) if user_agent else user_agent,
        }
        record = logging.getLogRecordFactory()(
            logger.name, logging.INFO, __file__, 0, redact(f"{method} {path} {status}"), None, None
        )
        record.__dict__.update(fields)  # as extra= does; these names never clash with a record's
        record.__dict__[_ACCESS] = fields
        logger.handle(record)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
