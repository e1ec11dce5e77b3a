"""wrk (Debian's 4.1) for small-request throughput: fixed headers, latency percentiles as JSON.

wrk itself is a C event loop; a generated Lua script sets the request headers and, in
``done()``, prints one JSON line (requests, duration, bytes, error counts, latency percentiles
in microseconds) after a marker, which :func:`run_wrk` parses. Several wrk processes can run at
once against different nodes of a region (:func:`run_wrk_many`); their figures are merged.

Guarantees: every run is bounded by its duration plus a grace period (the process is killed
after that and :class:`WrkError` raised); a non-zero exit or missing JSON raises
:class:`WrkError` with wrk's output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

WRK_BIN = "wrk"
_MARKER = "QSBENCH-JSON "
_GRACE = 15.0

_LUA_TEMPLATE = """
wrk.method = "GET"
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{marker}{{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}},' ..
    '"latency_us":{{"min":%d,"max":%d,"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
"""


class WrkError(RuntimeError):
    """wrk failed, timed out or printed no result."""


@dataclass
class WrkResult:
    """One wrk run (or several merged). Latencies in milliseconds."""

    requests: int
    duration_s: float
    bytes: int
    errors: dict[str, int] = field(default_factory=dict)
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    p999_ms: float = 0.0
    mean_ms: float = 0.0
    max_ms: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def available() -> bool:
    return shutil.which(WRK_BIN) is not None


def lua_script(headers: Mapping[str, str]) -> str:
    """The Lua source that sets ``headers`` and reports JSON in ``done()``."""
    lines = [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    return _LUA_TEMPLATE.format(headers="\n".join(lines), marker=_MARKER)


def _command(url: str, script: Path, connections: int, threads: int, duration: float) -> list[str]:
    return [
        WRK_BIN,
        f"-t{threads}",
        f"-c{max(connections, threads)}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]


def _parse(output: str) -> WrkResult:
    for line in output.splitlines():
        if line.startswith(_MARKER):
            raw = json.loads(line[len(_MARKER) :])
            lat = raw["latency_us"]
            return WrkResult(
                requests=int(raw["requests"]),
                duration_s=raw["duration_us"] / 1e6,
                bytes=int(raw["bytes"]),
                errors={k: int(v) for k, v in raw["errors"].items()},
                p50_ms=lat["p50"] / 1000,
                p90_ms=lat["p90"] / 1000,
                p99_ms=lat["p99"] / 1000,
                p999_ms=lat["p999"] / 1000,
                mean_ms=lat["mean"] / 1000,
                max_ms=lat["max"] / 1000,
            )
    raise WrkError(f"wrk printed no result:\n{output[-2000:]}")


def run_wrk_many(
    urls: Sequence[str],
    headers: Mapping[str, str],
    *,
    connections: int,
    duration: float,
    threads: int = 1,
) -> WrkResult:
    """Run one wrk per URL at the same time (``connections`` split between them) and merge.

    Merged figures: requests and bytes summed, duration the longest, p50/p90/mean weighted by
    each run's request count, p99/p99.9/max the worst of the runs (an upper bound).

    Raises:
        WrkError: a wrk exited non-zero, hung past its duration + grace, or printed no JSON.
    """
    if not urls:
        raise ValueError("no URL to load")
    per = max(1, connections // len(urls))
    with tempfile.TemporaryDirectory(prefix="qs-wrk-") as tmp:
        script = Path(tmp) / "headers.lua"
        script.write_text(lua_script(headers))
        procs = [
            subprocess.Popen(
                _command(u, script, per, threads, duration),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for u in urls
        ]
        outputs: list[str] = []
        try:
            for proc in procs:
                out, _ = proc.communicate(timeout=duration + _GRACE)
                if proc.returncode != 0:
                    raise WrkError(f"wrk exited {proc.returncode}:\n{out[-2000:]}")
                outputs.append(out)
        except subprocess.TimeoutExpired as exc:
            raise WrkError(f"wrk did not finish within {duration + _GRACE:.0f}s") from exc
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
    return merge([_parse(o) for o in outputs])


def run_wrk(
    url: str, headers: Mapping[str, str], *, connections: int, duration: float, threads: int = 1
) -> WrkResult:
    """One wrk run against ``url``; see :func:`run_wrk_many`."""
    return run_wrk_many([url], headers, connections=connections, duration=duration, threads=threads)


def merge(results: Sequence[WrkResult]) -> WrkResult:
    """Combine concurrent runs (see :func:`run_wrk_many` for how each figure merges)."""
    if len(results) == 1:
        return results[0]
    total = sum(r.requests for r in results) or 1

    def weighted(attr: str) -> float:
        return sum(getattr(r, attr) * r.requests for r in results) / total

    errors: dict[str, int] = {}
    for r in results:
        for k, v in r.errors.items():
            errors[k] = errors.get(k, 0) + v
    return WrkResult(
        requests=sum(r.requests for r in results),
        duration_s=max(r.duration_s for r in results),
        bytes=sum(r.bytes for r in results),
        errors=errors,
        p50_ms=weighted("p50_ms"),
        p90_ms=weighted("p90_ms"),
        p99_ms=max(r.p99_ms for r in results),
        p999_ms=max(r.p999_ms for r in results),
        mean_ms=weighted("mean_ms"),
        max_ms=max(r.max_ms for r in results),
    )
