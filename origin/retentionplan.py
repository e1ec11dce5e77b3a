"""What a retention policy deletes from one repository: a pure function of what is on disk.

For a repository matched by a :class:`~regcore.opsconfig.RetentionPolicy` (the first policy
whose glob matches), with push time = the mtime of the tag's ``current/link`` (rewritten on
every push of the tag) and of a manifest's revision link:

Tags (only when ``keep_last`` or ``tags_older_than`` is set). A tag **stays** if any holds:

* it matches ``keep_tags`` (regex, searched);
* it is among the ``keep_last`` most recently *pushed* tags (ties broken by name);
* ``tags_older_than`` is set and the tag was pushed more recently than that;
* ``unless_pulled_within`` is set and its manifest was pulled (by that tag or by digest)
  within that window;
* an immutability rule covers it (reported as kept by that rule).

Every other tag is deleted. So ``keep_last: 5`` alone keeps exactly the five newest pushes;
with ``tags_older_than: 30d`` too, it deletes tags older than 30 days beyond the five newest.

Manifests. The repository's live manifests are those reached (through index children and
referrers whose ``subject`` is live) from the targets of the remaining tags and from untagged
top-level manifests (not a child or referrer of another manifest of the repository) that are
not older than ``untagged_older_than``. Every other revision is deleted: manifests whose tags
were all deleted, untagged manifests past the age, and children/referrers only they reached.
Deleted manifests are listed parents first.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from origin.gcmark import RefsOf, closure, parents_first
from origin.pulls import PullTimes
from origin.rootscan import RepoScan
from regcore.digest import Digest
from regcore.opsconfig import ImmutabilityRule, RetentionPolicy

RuleFor = Callable[[str, str], ImmutabilityRule | None]


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


@dataclass
class Deletion:
    kind: str  # "tag" | "manifest"
    repository: str
    digest: str
    tag: str | None
    reason: str
    policy: str
    pushed: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Kept:
    repository: str
    tag: str
    reason: str


@dataclass
class RepoPlan:
    repository: str
    policy: str
    tags: list[Deletion] = field(default_factory=list)
    manifests: list[Deletion] = field(default_factory=list)  # parents first
    kept: list[Kept] = field(default_factory=list)


def _condemn_tags(
    scan: RepoScan,
    policy: RetentionPolicy,
    pulls: PullTimes,
    rule_for: RuleFor,
    now: float,
    plan: RepoPlan,
) -> None:
    if not policy.deletes_tags:
        return
    newest = sorted(scan.tags.items(), key=lambda kv: (-kv[1][1], kv[0]))
    last = {tag for tag, _ in newest[: policy.keep_last or 0]}
    keep_re = re.compile(policy.keep_tags) if policy.keep_tags is not None else None
    for tag, (digest, pushed) in newest:
        if keep_re is not None and keep_re.search(tag):
            continue
        if tag in last:
            continue
        age = now - pushed
        if policy.tags_older_than is not None and age < policy.tags_older_than:
            continue
        if policy.unless_pulled_within is not None:
            pulled = pulls.last(digest, tag)
            if pulled is not None and now - pulled <= policy.unless_pulled_within:
                continue
        rule = rule_for(scan.name, tag)
        if rule is not None:
            plan.kept.append(Kept(scan.name, tag, f"immutable ({rule.describe()})"))
            continue
        if policy.keep_last is not None:
            reason = f"not among the {policy.keep_last} most recently pushed tags"
            if policy.tags_older_than is not None:
                reason += f" and pushed {_ago(age)} ago"
        else:
            reason = f"pushed {_ago(age)} ago"
        if policy.unless_pulled_within is not None:
            reason += f", not pulled within {_ago(policy.unless_pulled_within)}"
        plan.tags.append(
            Deletion("tag", scan.name, str(digest), tag, reason, policy.repositories, pushed)
        )


def plan_repository(
    scan: RepoScan,
    policy: RetentionPolicy,
    pulls: PullTimes,
    refs_of: RefsOf,
    rule_for: RuleFor,
    now: float,
) -> RepoPlan:
    """The deletions ``policy`` asks for in ``scan`` (see the module docstring)."""
    plan = RepoPlan(scan.name, policy.repositories)
    _condemn_tags(scan, policy, pulls, rule_for, now, plan)
    deleted_tags = {d.tag for d in plan.tags}
    originally_tagged = {digest for digest, _ in scan.tags.values()}
    roots = {digest for tag, (digest, _) in scan.tags.items() if tag not in deleted_tags}
    below: set[Digest] = set()
    for digest in scan.revisions:
        refs = refs_of(digest)
        if refs is not None:
            below.update(c for c in refs.children if c in scan.revisions)
            if refs.subject is not None and refs.subject in scan.revisions:
                below.add(digest)
    reasons: dict[Digest, str] = {}
    for digest, pushed in scan.revisions.items():
        if digest in originally_tagged:
            if digest not in roots:
                reasons[digest] = "its tags were deleted"
            continue
        if digest in below:
            continue
        age = now - pushed
        if policy.untagged_older_than is not None and age >= policy.untagged_older_than:
            reasons[digest] = f"untagged, pushed {_ago(age)} ago"
        else:
            roots.add(digest)
    live = closure(roots, refs_of, scan)
    dead = set(scan.revisions) - live
    for digest in parents_first(dead, refs_of, scan):
        plan.manifests.append(
            Deletion(
                "manifest",
                scan.name,
                str(digest),
                None,
                reasons.get(digest, "only reachable from deleted manifests"),
                policy.repositories,
                scan.revisions[digest],
            )
        )
    return plan


def without(scan: RepoScan, plan: RepoPlan) -> RepoScan:
    """``scan`` as it will be once ``plan`` is applied (for bytes-freed arithmetic)."""
    tags = {d.tag for d in plan.tags}
    gone = {Digest.parse(d.digest) for d in plan.manifests}
    return RepoScan(
        scan.name,
        revisions={d: t for d, t in scan.revisions.items() if d not in gone},
        tags={t: v for t, v in scan.tags.items() if t not in tags},
        layers=dict(scan.layers),
        uploads=list(scan.uploads),
    )
