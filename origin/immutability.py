"""Tag immutability: tags that, once pushed, can be neither moved nor deleted.

Rules come from ``quayside.immutability`` (:class:`regcore.opsconfig.ImmutabilityConfig`): a
rule matches a repository glob and, optionally, a tag regex (searched, so ``^v[0-9]`` means
"starts with v and a digit"). ``refuse_latest`` lists repository globs where the tag
``latest`` cannot be pushed at all (release namespaces that want explicit versions).

Guarantees (enforced by the manifest handlers through :class:`TagRules`):

* PUT of a manifest under an existing immutable tag with a *different* digest answers 409
  ``DENIED`` naming the rule; re-pushing the same digest is accepted (idempotent pushes and
  retries keep working). Two concurrent first pushes of one immutable tag are serialised by
  :meth:`TagRules.tag_lock`, so the second sees the first and is refused if it differs.
* DELETE of an immutable tag, or of a manifest digest that an immutable tag points at (which
  would remove the tag), answers 409 ``DENIED`` naming the rule.
* PUT of ``latest`` in a ``refuse_latest`` repository answers 409 ``DENIED`` naming the glob.
* Retention never deletes an immutable tag (it reports it as kept by the rule).

A refused request changes nothing on disk.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from regcore import errors
from regcore.digest import Digest
from regcore.opsconfig import ImmutabilityConfig, ImmutabilityRule, glob_regex


class TagImmutable(errors.RegistryError):
    """409 DENIED: the tag is protected by an immutability rule."""

    code = "DENIED"
    status = 409
    message = "tag is immutable"


class TagRules:
    """Compiled immutability rules; cheap to ask on every manifest PUT/DELETE."""

    def __init__(self, config: ImmutabilityConfig) -> None:
        self.config = config
        self._rules = [
            (glob_regex(r.repositories), re.compile(r.tags) if r.tags is not None else None, r)
            for r in config.rules
        ]
        self._latest = [(glob_regex(g), g) for g in config.refuse_latest]
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @property
    def active(self) -> bool:
        return bool(self._rules or self._latest)

    def rule_for(self, name: str, tag: str) -> ImmutabilityRule | None:
        """The first rule making ``name:tag`` immutable, or None."""
        for repo_re, tag_re, rule in self._rules:
            if repo_re.fullmatch(name) and (tag_re is None or tag_re.search(tag)):
                return rule
        return None

    def latest_glob(self, name: str) -> str | None:
        return next((g for rx, g in self._latest if rx.fullmatch(name)), None)

    @asynccontextmanager
    async def tag_lock(self, name: str, tag: str) -> AsyncIterator[None]:
        """Serialise check-and-write of ``name:tag`` when a rule covers it (else a no-op)."""
        if self.rule_for(name, tag) is None:
            yield
            return
        key = (name, tag)
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def check_put(self, name: str, tag: str, current: Digest | None, new: Digest) -> None:
        """Raise :class:`TagImmutable` if writing ``new`` under ``name:tag`` is refused."""
        glob = self.latest_glob(name) if tag == "latest" else None
        if glob is not None:
            raise TagImmutable(
                {"repository": name, "tag": tag, "rule": f"refuse_latest {glob!r}"},
                message=f"tag 'latest' is refused in {name} (immutability rule "
                f"refuse_latest {glob!r}): push an explicit version",
            )
        if current is None or current == new:
            return
        rule = self.rule_for(name, tag)
        if rule is not None:
            raise TagImmutable(
                {"repository": name, "tag": tag, "digest": str(current), "rule": rule.describe()},
                message=f"tag {tag!r} of {name} is immutable (rule: {rule.describe()}); "
                "it cannot be overwritten",
            )

    def check_delete(self, name: str, tags: Iterable[str]) -> None:
        """Raise :class:`TagImmutable` if any of ``tags`` (being deleted) is immutable."""
        for tag in tags:
            rule = self.rule_for(name, tag)
            if rule is not None:
                raise TagImmutable(
                    {"repository": name, "tag": tag, "rule": rule.describe()},
                    message=f"tag {tag!r} of {name} is immutable (rule: {rule.describe()}); "
                    "it cannot be deleted",
                )
