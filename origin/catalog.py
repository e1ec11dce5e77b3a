"""``GET /v2/_catalog``: repository names, paged with ``n``/``last`` like registry:2.

Answers ``200 {"repositories": [...]}`` (byte-sorted). Without ``n`` a page holds at most
:data:`DEFAULT_PAGE` names, and a ``Link: </v2/_catalog?n=..&last=..>; rel="next"`` header
names the next page when more exist. A malformed ``n`` is PAGINATION_NUMBER_INVALID (400).
A repository is listed once it holds a manifest (a ``_manifests`` directory), as registry:2 does,
and only if the caller may pull it (:func:`origin.authz.visible_repositories`).
"""

from __future__ import annotations

from aiohttp import web

from origin import state
from origin.authz import visible_repositories
from origin.pagination import paginate

DEFAULT_PAGE = 1000


async def catalog(request: web.Request) -> web.Response:
    names = visible_repositories(request, await request.app[state.REPOS].catalog())
    page = paginate(names, request.query, "/v2/_catalog", default_n=DEFAULT_PAGE)
    headers = {"Link": page.link} if page.link else {}
    return web.json_response({"repositories": page.items}, headers=headers)


def add_routes(app: web.Application) -> None:
    app.router.add_route("GET", "/v2/_catalog", catalog, name="catalog")
