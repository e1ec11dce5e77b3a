"""``GET /v2/<name>/tags/list``: the repository's tags, paged with ``n``/``last``.

Answers ``200 {"name": ..., "tags": [...]}`` (``tags`` always a list, byte-sorted); a ``Link``
header names the next page when one exists (see :mod:`origin.pagination`). Errors:
NAME_INVALID (400) for a bad name, NAME_UNKNOWN (404) for a repository that does not exist,
PAGINATION_NUMBER_INVALID (400) for a malformed ``n``.
"""

from __future__ import annotations

from aiohttp import web

from origin import state
from origin.pagination import paginate
from regcore.http import NAME
from regcore.reference import validate_name


async def list_tags(request: web.Request) -> web.Response:
    name = validate_name(request.match_info["name"])
    repos = request.app[state.REPOS]
    tags = await repos.list_tags(name)
    page = paginate(tags, request.query, f"/v2/{name}/tags/list")
    headers = {"Link": page.link} if page.link else {}
    return web.json_response({"name": name, "tags": page.items}, headers=headers)


def add_routes(app: web.Application) -> None:
    app.router.add_route("GET", f"/v2/{NAME}/tags/list", list_tags, name="tags")
