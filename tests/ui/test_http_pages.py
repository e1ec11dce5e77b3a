"""The web UI's pages over HTTP against the real origin: roles, content, headers, no secrets.

Content is pushed through the registry API (:mod:`tests.ui.content`); the pages are read as
different users, each with their own cookie jar.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from origin.ui.trust import ScanSummary, Verdict
from tests.ui.a11y import css_pair_problems, page_problems
from tests.ui.conftest import UiOrigin, UiOriginFactory, Visitor
from tests.ui.content import USERS, Published

CSS = Path(__file__).parents[2] / "origin" / "ui" / "static" / "ui.css"
OPS_INVENTORY = importlib.util.find_spec("origin.inventory") is not None


def listed(body: str) -> set[str]:
    """The repositories of the repositories table."""
    return set(re.findall(r'<a href="/ui/r/([^"]+)/">', body))


async def signed_in(origin: UiOrigin, user: str) -> Visitor:
    v = origin.browser()
    resp, body = await v.sign_in(user)
    assert resp.status == 303, body
    return v


def pages_of(p: Published) -> list[str]:
    return [
        "/ui/",
        "/ui/r/team/app/",
        "/ui/r/team/app/-/tags/1.0",
        "/ui/r/team/app/-/tags/multi",
        f"/ui/r/team/app/-/manifests/{p.multi_children[0]}",
        f"/ui/r/team/app/-/manifests/{p.cosign_digest}",
        "/ui/r/team/app/-/audit",
        "/ui/r/public/base/",
    ]


async def test_each_user_sees_only_the_repositories_the_authorizer_lets_them_pull(
    ui_origin: UiOriginFactory,
) -> None:
    origin = await ui_origin()
    expected = {
        "alice": {"team/app", "public/base"},
        "carol": {"team/app", "public/base"},
        "dave": {"public/base"},  # no team role; public/* gives every signed-in user viewer
        "erin": {"public/base", "other/secret"},
    }
    for user, names in expected.items():
        v = await signed_in(origin, user)
        resp, body = await v.get("/ui/")
        assert resp.status == 200
        assert listed(body) == names, user
    dave = await signed_in(origin, "dave")
    for path in ("/ui/r/team/app/", "/ui/r/team/app/-/tags/1.0", "/ui/r/other/secret/"):
        resp, body = await dave.get(path)
        assert resp.status == 403, path
        assert "<h1>Not allowed</h1>" in body and "team/app:1.0" not in body
    resp, body = await dave.get("/ui/r/nonexistent/repo/")
    assert resp.status == 403  # same answer whether it exists or not


async def test_the_audit_trail_of_a_repository_is_for_its_admins_only(
    ui_origin: UiOriginFactory,
) -> None:
    origin = await ui_origin()
    p = origin.published
    assert p is not None
    alice = await signed_in(origin, "alice")
    resp, body = await alice.get("/ui/r/team/app/")
    assert 'href="/ui/r/team/app/-/audit"' in body
    resp, body = await alice.get("/ui/r/team/app/-/audit")
    assert resp.status == 200
    assert "<h1>Audit trail of team/app</h1>" in body
    assert "user:alice" in body and ">push<" in body and ">tag<" in body
    assert p.app_digest[:19] in body
    assert p.public_digest[:19] not in body  # another repository's events are not shown
    for user in ("bob", "carol"):
        v = await signed_in(origin, user)
        _, page = await v.get("/ui/r/team/app/")
        assert "-/audit" not in page
        resp, body = await v.get("/ui/r/team/app/-/audit")
        assert resp.status == 403, user
        assert "user:alice" not in body


async def test_repositories_and_tags_show_sizes_digests_and_push_times(
    ui_origin: UiOriginFactory,
) -> None:
    origin = await ui_origin()
    p = origin.published
    assert p is not None
    alice = await signed_in(origin, "alice")
    _, body = await alice.get("/ui/")
    row = body[body.index('href="/ui/r/team/app/"') :].split("</tr>")[0]
    assert f'title="{p.repo_bytes("team/app")} bytes"' in row
    # Without the operations inventory no pull times are recorded: said so, not "never".
    assert ("never" if OPS_INVENTORY else "not recorded") in row
    _, body = await alice.get("/ui/r/team/app/")
    sig_tag = p.app_digest.replace(":", "-") + ".sig"
    for tag, digest in (
        ("1.0", p.app_digest),
        ("multi", p.multi_digest),
        (sig_tag, p.cosign_digest),
    ):
        assert f'href="/ui/r/team/app/-/tags/{tag}"' in body
        assert f'href="/ui/r/team/app/-/manifests/{digest}"' in body
    pushed = re.findall(r'<time datetime="(\d{4}-\d\d-\d\dT[\d:]+Z)">', body)
    assert len(pushed) >= 3


async def test_a_tag_page_lists_layers_with_sizes_signatures_and_reports(
    ui_origin: UiOriginFactory,
) -> None:
    origin = await ui_origin()
    p = origin.published
    assert p is not None
    alice = await signed_in(origin, "alice")
    resp, body = await alice.get("/ui/r/team/app/-/tags/1.0")
    assert resp.status == 200
    assert f'<code id="manifest-digest">{p.app_digest}</code>' in body
    for digest, size in p.app_layers:
        assert f'title="{digest}"' in body and f'title="{size} bytes"' in body
    assert "linux/amd64" in body
    verdict = re.search(r'id="signature-verdict"[^>]*>([^<]+)<', body)
    assert verdict is not None and verdict.group(1) == "not configured"
    scan = re.search(r'id="scan-verdict"[^>]*>([^<]+)<', body)
    assert scan is not None and scan.group(1) == "not configured"
    table = body[body.index('id="signatures"') :].split("</table>")[0]
    assert "cosign signature" in table and f"tag {p.app_digest.replace(':', '-')}.sig" in table
    assert "notation signature" in table and "referrers API" in table
    assert p.cosign_digest[:19] in table and p.notation_digest[:19] in table
    reports = body[body.index('id="reports"') :].split("</ul>")[0]
    assert "scan report (SARIF)" in reports and p.report_digest[:19] in reports
    resp, body = await alice.get(f"/ui/r/team/app/-/manifests/{p.notation_digest}")
    assert resp.status == 200
    assert f'href="/ui/r/team/app/-/manifests/{p.app_digest}"' in body  # its subject
    assert "application/vnd.cncf.notary.signature" in body


async def test_an_index_page_lists_its_platforms(ui_origin: UiOriginFactory) -> None:
    origin = await ui_origin()
    p = origin.published
    assert p is not None
    carol = await signed_in(origin, "carol")
    resp, body = await carol.get("/ui/r/team/app/-/tags/multi")
    assert resp.status == 200
    table = body[body.index('id="platforms"') :].split("</table>")[0]
    assert "linux/amd64" in table and "linux/arm64/v8" in table
    for child in p.multi_children:
        assert f'href="/ui/r/team/app/-/manifests/{child}"' in table
    resp, body = await carol.get(f"/ui/r/team/app/-/manifests/{p.multi_children[1]}")
    assert resp.status == 200 and "linux/arm64/v8" in body


class FixedTrust:
    """Stands in for the origin's signature/scan policies (regcore/policy, not yet on this
    branch): answers from a table, as the interface promises, so the page's rendering of
    each state can be checked."""

    def __init__(self, verdicts: dict[str, Verdict], scans: dict[str, ScanSummary]) -> None:
        self.verdicts, self.scans = verdicts, scans

    async def signature_verdict(self, repository: str, digest: str) -> Verdict:
        return self.verdicts[digest]

    async def scan_summary(self, repository: str, digest: str) -> ScanSummary:
        return self.scans[digest]


class BrokenTrust:
    async def signature_verdict(self, repository: str, digest: str) -> Verdict:
        raise RuntimeError("policy store at /etc/quayside/keys is unreadable: secret-xyz")

    async def scan_summary(self, repository: str, digest: str) -> ScanSummary:
        raise RuntimeError("trivy at http://10.0.0.5:4954 down: secret-xyz")


async def test_verdicts_and_scan_summaries_come_from_the_trust_source(
    ui_origin: UiOriginFactory, tmp_path: Path
) -> None:
    holder: dict[str, str] = {}

    class Lazy(FixedTrust):
        async def signature_verdict(self, repository: str, digest: str) -> Verdict:
            holder["asked"] = f"{repository}@{digest}"
            return await super().signature_verdict(repository, digest)

    trust = Lazy({}, {})
    origin = await ui_origin(trust=trust)
    p = origin.published
    assert p is not None
    trust.verdicts[p.app_digest] = Verdict(
        "verified", policy="team-signed", mode="enforce", signers=("ci-key",), detail="ok"
    )
    trust.scans[p.app_digest] = ScanSummary(
        "blocked",
        policy="no-critical",
        mode="enforce",
        counts={"CRITICAL": 2, "LOW": 7},
        report=p.report_digest,
        format="sarif",
    )
    alice = await signed_in(origin, "alice")
    _, body = await alice.get("/ui/r/team/app/-/tags/1.0")
    assert holder["asked"] == f"team/app@{p.app_digest}"
    assert re.search(r'id="signature-verdict" class="badge badge-good">verified<', body)
    assert "<code>team-signed</code> (enforce)" in body and "<code>ci-key</code>" in body
    assert re.search(r'id="scan-verdict" class="badge badge-bad">blocked<', body)
    counts = body[body.index('id="scan-counts"') :].split("</table>")[0]
    assert re.findall(r"<th scope=\"col\">(\w+)</th>", counts) == ["CRITICAL", "LOW"]
    assert re.findall(r'<td class="num">(\d+)</td>', counts) == ["2", "7"]

    broken = await ui_origin(trust=BrokenTrust())
    v = await signed_in(broken, "alice")
    resp, body = await v.get("/ui/r/team/app/-/tags/1.0")
    assert resp.status == 200
    assert re.search(r'id="signature-verdict"[^>]*>error<', body)
    assert re.search(r'id="scan-verdict"[^>]*>error<', body)
    assert "secret-xyz" not in body and "10.0.0.5" not in body


async def test_unknown_or_malformed_references_are_404_or_400_pages(
    ui_origin: UiOriginFactory,
) -> None:
    origin = await ui_origin()
    p = origin.published
    assert p is not None
    alice = await signed_in(origin, "alice")
    zero = "sha256:" + "0" * 64
    for path, status in (
        ("/ui/r/team/nothing/", 404),
        ("/ui/r/team/app/-/tags/9.9", 404),
        (f"/ui/r/team/app/-/manifests/{zero}", 404),
        (f"/ui/r/team/app/-/manifests/{p.app_layers[0][0]}", 404),  # a blob, not a manifest
        (f"/ui/r/team/app/-/manifests/{p.public_digest}", 404),  # another repository's
        ("/ui/r/team/app/-/manifests/sha256:nothex", 400),
        ("/ui/r/team/app/-/tags/-bad", 400),
        ("/ui/r/Team/App/", 400),
        ("/ui/r/team/app/-/nothing", 404),
        ("/ui/nothing", 404),
    ):
        resp, body = await alice.get(path)
        assert resp.status == status, (path, body[:200])
        assert resp.headers["Content-Type"].startswith("text/html"), path
        assert "<h1>" in body and '"errors"' not in body
    resp, _ = await alice.get("/ui/r/team/app")
    assert resp.status in (301, 308) and resp.headers["Location"] == "/ui/r/team/app/"
    resp, _ = await alice.get("/ui")
    assert resp.status == 303 and resp.headers["Location"] == "/ui/"


async def test_no_page_shows_a_password_hash_key_or_session_cookie(
    ui_origin: UiOriginFactory, tmp_path: Path
) -> None:
    origin = await ui_origin()
    p = origin.published
    assert p is not None
    alice = await signed_in(origin, "alice")
    cookie = alice.cookie("quayside_ui")
    assert cookie
    hashes = [line.split(":", 1)[1] for line in (tmp_path / "htpasswd-0").read_text().splitlines()]
    key = (origin.root / "quayside" / "ui" / "session.key").read_bytes()
    secrets = [*USERS.values(), *hashes, cookie, cookie.split(".")[1], key.hex()]
    for path in [*pages_of(p), "/ui/login", "/ui/r/team/app/-/tags/nope"]:
        resp, body = await alice.get(path)
        assert resp.status in (200, 404), path
        for secret in secrets:
            assert secret not in body, path
        assert "Traceback" not in body
    assert (origin.root / "quayside" / "ui" / "session.key").stat().st_mode & 0o777 == 0o600


async def test_pages_carry_a_strict_content_security_policy_and_no_store(
    ui_origin: UiOriginFactory,
) -> None:
    origin = await ui_origin(content=False)
    v = origin.browser()
    for path in ("/ui/", "/ui/login", "/ui/nothing"):
        resp, body = await v.get(path)
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp
        assert "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Cache-Control"] == "no-store"
        assert "<script" not in body and "style=" not in body
    resp, css = await v.get("/ui/static/ui.css")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/css")
    assert css == CSS.read_text()


async def test_every_page_passes_the_accessibility_checks(ui_origin: UiOriginFactory) -> None:
    origin = await ui_origin()
    p = origin.published
    assert p is not None
    alice = await signed_in(origin, "alice")
    anon = origin.browser()
    dave = await signed_in(origin, "dave")
    pages = [(alice, path) for path in pages_of(p)]
    pages += [(anon, "/ui/login"), (anon, "/ui/"), (dave, "/ui/r/team/app/"), (alice, "/ui/x")]
    for v, path in pages:
        _, body = await v.get(path)
        assert page_problems(body) == [], path
    _, body = await anon.sign_in("alice", "wrong-password")
    assert page_problems(body) == []
    assert css_pair_problems(CSS.read_text()) == []


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_with_authentication_off_the_ui_is_open_and_read_only(
    ui_origin: UiOriginFactory, method: str
) -> None:
    origin = await ui_origin(auth=False)
    p = origin.published
    assert p is not None
    v = origin.browser()
    resp, body = await v.get("/ui/")
    assert listed(body) == {"team/app", "public/base", "other/secret"}
    assert "Sign in" not in body and "Authentication off" in body
    resp, _ = await v.get("/ui/login")
    assert resp.status == 303 and resp.headers["Location"] == "/ui/"
    resp, body = await v.get("/ui/r/team/app/-/audit")
    assert resp.status == 200  # anyone may delete through the open API: anyone is admin
    async with v.session.request(
        method, f"{origin.base_url}/ui/r/team/app/-/tags/1.0", allow_redirects=False
    ) as resp:
        assert resp.status == 405
    async with v.session.get(f"{origin.base_url}/v2/team/app/manifests/1.0") as resp:
        assert resp.status == 200 and resp.headers["Docker-Content-Digest"] == p.app_digest


async def test_a_read_only_origin_shows_its_pages_without_writing(
    ui_origin: UiOriginFactory, tmp_path: Path
) -> None:
    first = await ui_origin(root=tmp_path / "shared")
    p = first.published
    assert p is not None
    referrers = list((tmp_path / "shared").rglob("_referrers"))
    for d in referrers:  # as a root written by registry:2 would be: no referrers index
        for f in sorted(d.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        d.rmdir()
    before = sorted(str(x) for x in (tmp_path / "shared" / "docker").rglob("*"))
    ro = await ui_origin(
        root=tmp_path / "shared",
        content=False,
        overrides={"storage.maintenance.readonly.enabled": True},
    )
    alice = await signed_in(ro, "alice")
    resp, body = await alice.get("/ui/r/team/app/-/tags/1.0")
    assert resp.status == 200
    assert "notation signature" in body and "read-only mode" in body
    after = sorted(str(x) for x in (tmp_path / "shared" / "docker").rglob("*"))
    assert after == before
