"""``n``/``last`` pagination shared by the tags list and the catalog.

Rules (distribution-spec v1.1 "Listing Tags", registry:2's ``_catalog``):

* the items are sorted in byte order, as registry:2 sorts them, so a ``last`` taken from one
  server's answer pages the same way on the other;
* ``last`` (any string, present or not) keeps only the items strictly after it;
* ``n`` absent -> every remaining item, up to :data:`MAX_PAGE` for the catalog (the caller
  chooses the default); ``n=0`` -> an empty page; ``n`` larger than the cap -> a page of
  ``cap`` items plus a ``Link`` (the spec allows fewer than ``n`` items when a ``Link`` is sent);
* ``n`` that is not a non-negative decimal integer -> :class:`errors.PaginationNumberInvalid`;
* when items remain after the page, ``Link: <path?n=N&last=X>; rel="next"`` names the next page.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from regcore import errors

MAX_PAGE = 10_000
"""Largest page a single answer carries; bigger ``n`` values are served in several pages."""


@dataclass(frozen=True, slots=True)
class Page:
    items: list[str]
    link: str | None
    """Value for the ``Link`` header, or None when this is the last page."""


def parse_n(query: Mapping[str, str]) -> int | None:
    """The ``n`` query parameter: None when absent or empty; raises PaginationNumberInvalid."""
    raw = query.get("n")
    if raw is None or raw == "":
        return None
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise errors.PaginationNumberInvalid({"n": raw[:32]})
    return int(text)


def paginate(
    items: Sequence[str],
    query: Mapping[str, str],
    path: str,
    *,
    default_n: int | None = None,
    cap: int = MAX_PAGE,
) -> Page:
    """Apply ``n``/``last`` from ``query`` to sorted ``items``; ``path`` is the list's URL path.

    ``default_n`` is the page size when ``n`` is absent (None: no limit). Raises
    :class:`errors.PaginationNumberInvalid` for a malformed ``n``.
    """
    n = parse_n(query)
    requested = n
    if n is None:
        n = default_n
    last = query.get("last") or ""
    start = bisect.bisect_right(items, last) if last else 0
    remaining = items[start:]
    if n is None:
        size = min(len(remaining), cap)
    else:
        size = min(n, cap)
    page = list(remaining[:size])
    link = None
    if page and len(remaining) > len(page):
        link_n = requested if requested is not None else size
        link = f'<{path}?{urlencode({"n": link_n, "last": page[-1]})}>; rel="next"'
    return Page(items=page, link=link)
