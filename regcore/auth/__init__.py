"""Access control both servers share: who is asking, may they, and the tokens that say so.

No aiohttp application lives here; the middleware that asks these questions sits with each
server (the origin's ``origin/access.py`` and ``origin/authz.py``).

- Who: :mod:`.principal` (user, robot or anonymous, plus the client address after the
  trusted-proxy rule), :mod:`.authenticator` (an ``Authorization`` header to a principal:
  htpasswd Basic, robots, Bearer tokens), :mod:`.htpasswd` (bcrypt-only files, re-read on
  change), :mod:`.robots` (CI accounts), :mod:`.ratelimit` (failed-login throttling).
- May they: :mod:`.authorizer` (pull/push/delete on a repository, from allow-lists, token
  claims, robot patterns and role rules).
- Tokens: :mod:`.tokens` (JWTs as registry:2 issues and trusts them: issue, verify, scopes),
  :mod:`.keys` (signing keys, certificates, libtrust key ids), :mod:`.signing` (the token
  service's key under the origin's root, JWKS).
- Setup: :mod:`.config` (``auth:``, ``quayside.auth``, ``quayside.audit`` of the origin's
  config), :mod:`.paths` (where those files live, for the commands), :mod:`.tlscerts` (a small
  CA and server certificates).

Who uses it: the origin (access control, token endpoint, audit), the ``quayside users``,
``robots``, ``audit`` and ``certs`` commands, and the test harness (``harness/tokenserver.py``
puts a token service in front of a real docker-registry). The edge does not yet: offline token
verification (JWKS from the origin) is the next step. The upstream client
(:mod:`regcore.client`) does not import this package.
"""

from __future__ import annotations
