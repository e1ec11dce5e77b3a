"""Human-readable byte sizes and durations, as they appear in config files and on the CLI.

Sizes: ``"10GiB"``, ``"500MB"``, ``"1g"``, ``"1048576"``, ``"1.5 MiB"``. Suffixes are
case-insensitive. Binary suffixes (``KiB``/``Ki``, ``MiB``, ``GiB``, ``TiB``, ``PiB``) are powers of
1024; decimal ones (``kB``/``KB``, ``MB``, ``GB``, ``TB``, ``PB``) are powers of 1000; a bare
letter (``k``, ``m``, ``g``, ``t``, ``p``) follows the docker/kubernetes habit of meaning the binary
unit. ``B`` or no suffix means bytes.

Durations: a number of seconds (``60``, ``"2.5"``) or Go's ``time.ParseDuration`` syntax as
distribution's config.yml uses it (``"10s"``, ``"168h"``, ``"1h30m"``, ``"500ms"``).

Every parser raises :class:`ValueError` with a message quoting the bad input.
"""

from __future__ import annotations

import math
import re

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Z]*)\s*$")

_BINARY = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def _multiplier(suffix: str, text: str) -> int:
    s = suffix.lower()
    if s in ("", "b"):
        return 1
    if s.endswith("b") and len(s) >= 2:
        s = s[:-1]
        if s.endswith("i") and len(s) == 2 and s[0] in _BINARY:  # KiB, MiB, ...
            return 1024 ** _BINARY[s[0]]
        if len(s) == 1 and s in _BINARY:  # kB, MB, GB ...: decimal
            return 1000 ** _BINARY[s]
    elif len(s) == 2 and s[1] == "i" and s[0] in _BINARY:  # Ki, Mi, Gi (kubernetes)
        return 1024 ** _BINARY[s[0]]
    elif len(s) == 1 and s in _BINARY:  # k, m, g: binary, like docker's --memory
        return 1024 ** _BINARY[s]
    raise ValueError(
        f"invalid size {text!r}: unknown unit {suffix!r} "
        "(use B, KiB, MiB, GiB, TiB, kB, MB, GB, TB, or k/m/g/t)"
    )


def parse_size(value: str | int) -> int:
    """Parse a byte size into an integer number of bytes (``>= 0``).

    Accepts non-negative ints (not bools) and strings as described in the module docstring.
    Fractions are allowed with a unit (``"1.5GiB"``) and rounded down to whole bytes.

    Raises:
        ValueError: empty, negative, non-numeric, unknown unit, or a bool.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}: expected a number of bytes or e.g. '10GiB'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size {value!r}: must not be negative")
        return value
    if not isinstance(value, str):
        raise ValueError(f"invalid size {value!r}: expected a number of bytes or e.g. '10GiB'")
    m = _SIZE_RE.match(value)
    if not m:
        raise ValueError(f"invalid size {value!r}: expected a number of bytes or e.g. '10GiB'")
    number, suffix = m.groups()
    mult = _multiplier(suffix, value)
    if "." in number:
        return math.floor(float(number) * mult)
    return int(number) * mult


def format_size(n: int) -> str:
    """Format a byte count with the largest binary unit that keeps it >= 1 (``"1.5 GiB"``).

    Exact multiples print without decimals (``"10 GiB"``); others with one decimal; values
    under 1 KiB print as ``"512 B"``. ``parse_size(format_size(n))`` is ``n`` for exact
    multiples and within 5% otherwise.

    Raises:
        ValueError: ``n`` negative.
    """
    if n < 0:
        raise ValueError(f"invalid size {n!r}: must not be negative")
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    exp = 0
    while exp < len(units) - 1 and n >= 1024 ** (exp + 1):
        exp += 1
    if exp == 0:
        return f"{n} B"
    base = 1024**exp
    if n % base == 0:
        return f"{n // base} {units[exp]}"
    return f"{n / base:.1f} {units[exp]}"


def parse_duration(value: str | float) -> float:
    """Parse a duration into seconds (``>= 0``), as a float.

    Numbers (and numeric strings) are seconds. Strings may use Go's duration syntax,
    several parts allowed: ``"1h30m"``, ``"10s"``, ``"250ms"``.

    Raises:
        ValueError: negative, empty, bool, or not in either form.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: expected seconds or e.g. '10s', '1h30m'")
    if isinstance(value, int | float):
        if value < 0 or math.isnan(value) or math.isinf(value):
            raise ValueError(f"invalid duration {value!r}: must be a finite number >= 0")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}: expected seconds or e.g. '10s', '1h30m'")
    text = value.strip()
    try:
        return parse_duration(float(text))
    except ValueError:
        pass
    pos = 0
    total = 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos == 0 or pos != len(text):
        raise ValueError(f"invalid duration {value!r}: expected seconds or e.g. '10s', '1h30m'")
    return total


def format_duration(seconds: float) -> str:
    """Format seconds compactly (``"90s"`` -> ``"1m30s"``, ``0.25`` -> ``"250ms"``)."""
    if seconds < 1 and seconds > 0:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    h, rem = divmod(whole, 3600)
    m, s = divmod(rem, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s or not (h or m) else "")
    return out
