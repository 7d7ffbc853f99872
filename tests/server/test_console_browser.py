"""The web console in a real browser (Playwright driving Debian's Chromium): the demo story end to end.

Ana (agent) asks and proposes a refund; Lena (lead) approves the draft; Farid (finance) approves the refund;
Omar (operator) sees it in Monitor and Audit. Every page is screenshotted to ``test-artifacts/console/``.
A page that shows an error, or a control its role must not have, fails the test.
Needs ``/usr/bin/chromium`` (``scripts/setup-browser`` installs it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import Served

CHROMIUM = Path(os.environ.get("CHARTER_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
QUESTION = "How long does a refund take to show up on my card?"
ALL_PAGES = {
    "ask": "Ask",
    "review": "Review queue",
    "approvals": "Approvals",
    "monitor": "Monitor",
    "sources": "Sources",
    "evals": "Evals",
    "gate": "Gate",
    "audit": "Audit",
}
EVAL_CASES = ["n-refund-monthly", "n-duplicate-charge", "neg-legal-advice"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}: run scripts/setup-browser (apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


class Session:
    def __init__(self, browser: Any, live: Served, user: str) -> None:
        self.live, self.user = live, user
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.shots = 0
        self.page.goto(live.url + "/login")
        self.shot("login")
        self.page.fill("#token", live.tokens[user])
        self.page.click("button[type=submit]")
        self.page.wait_for_load_state()

    def goto(self, path: str) -> Any:
        from playwright.sync_api import Error

        try:
            self.page.goto(self.live.url + path)
        except (
            Error
        ) as exc:  # a running job's page refreshes itself (meta refresh); its reload can win the race
            if "interrupted by another navigation" not in str(exc):
                raise
            self.page.wait_for_load_state()
            self.page.goto(self.live.url + path)
        return self.page

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.shots += 1
        self.page.screenshot(path=str(ARTIFACTS / f"{self.user}-{self.shots:02d}-{name}.png"), full_page=True)

    def ok(self, name: str) -> None:
        """Screenshot, then fail if the page shows an error."""
        self.shot(name)
        errors = self.page.locator(".error, [role=alert]")
        assert errors.count() == 0, f"{self.user} on {name}: {errors.first.inner_text()}"

    def nav(self) -> set[str]:
        return set(self.page.locator("nav a[data-page]").evaluate_all("els => els.map(e => e.dataset.page)"))

    def close(self) -> None:
        self.context.close()


def _expect_nav(s: Session, pages: set[str]) -> None:
    assert s.nav() == pages, f"{s.user} sees {s.nav()}, expected {pages}"
    for page in set(ALL_PAGES) - pages:  # not only hidden: the server refuses the page too
        resp = s.goto("/" + page)
        assert resp.locator(".error").count() == 1, f"{s.user} reached /{page}"
        s.shot(f"refused-{page}")
        assert "Not allowed" in resp.locator("h1").inner_text()


def test_demo_story_in_the_browser(browser: Any, live: Served) -> None:
    # --- Ana, an agent: asks; the draft is cited and goes to review; she asks for a refund above 100
    ana = Session(browser, live, "ana")
    ana.ok("ask")
    _expect_nav(ana, {"ask", "review", "approvals"})
    p = ana.goto("/ask")
    p.fill("#question", QUESTION)
    p.click("#ask-form button[type=submit]")
    p.wait_for_selector("#draft")
    ana.ok("ask-result")
    assert p.locator("#draft a.cite").count() >= 1, "the draft has no citation links"
    first = p.locator("#draft a.cite").first.get_attribute("href")
    assert first and p.locator(first).count() == 1, "a citation does not link to its source"
    review_badge = p.locator(".badge", has_text="in review").inner_text()
    review_id = review_badge.split()[-1]
    ana.goto(f"/review/{review_id}")
    ana.ok("own-draft")
    assert p.locator("#approve-draft").count() == 0, "an agent must not be able to approve (own) drafts"
    r = ana.context.request.post(
        live.url + "/api/tools/issue_refund/calls",
        headers=live.headers("ana"),
        data={
            "args": {
                "invoice_id": "INV-2026-00048",
                "amount": 150.0,
                "reason": "customer downgraded mid-cycle",
            }
        },
    )
    refund = r.json()
    assert refund["status"] == "pending", refund
    ana.goto("/approvals")
    ana.ok("approvals-own")
    row = p.locator(f"tr[data-approval='{refund['id']}']")
    assert row.count() == 1 and row.locator("button").count() == 0, "own request must have no approve button"
    # the server refuses too, whatever the page shows
    forged = ana.context.request.post(live.url + f"/approvals/{refund['id']}", form={"decision": "approve"})
    assert forged.status == 403
    ana.close()

    # --- Lena, the lead: the draft is in her queue; she approves it; she cannot decide a refund above 100
    lena = Session(browser, live, "lena")
    _expect_nav(lena, {"ask", "review", "approvals", "monitor", "sources", "evals", "gate"})
    p = lena.goto("/review")
    lena.ok("review-queue")
    p.click(f"a[href='/review/{review_id}']")
    lena.ok("review-item")
    p.click("#approve-draft")
    p.wait_for_load_state()
    lena.ok("review-approved")
    assert "approve" in p.locator(".notice").inner_text().lower()
    lena.goto("/approvals")
    lena.ok("approvals-lead")
    assert p.locator(f"tr[data-approval='{refund['id']}']").count() == 0, "finance's refund shown to the lead"
    lena.goto("/evals")
    lena.ok("evals-lead")
    assert p.locator("#start-eval-run").count() == 1, "the lead may run evals (evals.run)"
    lena.close()

    # --- Farid, finance: approves the refund
    farid = Session(browser, live, "farid")
    _expect_nav(farid, {"ask", "review", "approvals", "monitor", "sources", "evals", "gate"})
    p = farid.goto("/approvals")
    farid.ok("approvals-finance")
    row = p.locator(f"tr[data-approval='{refund['id']}']")
    row.locator("input[name=reason]").fill("within policy")
    row.locator("button.approve").click()
    p.wait_for_load_state()
    farid.ok("approvals-approved")
    assert "executed" in p.locator(f"tr[data-approval='{refund['id']}']").inner_text()
    farid.goto("/monitor")
    farid.ok("monitor-finance")
    # finance reads evals (reports.read) but may not start one; as owners.cost Farid may run the gate
    p = farid.goto("/evals")
    farid.ok("evals-finance")
    assert p.locator("#start-eval-run").count() == 0, "finance must not see 'Start eval run'"
    assert farid.context.request.post(live.url + "/evals/runs").status == 403
    p = farid.goto("/gate")
    farid.ok("gate-finance")
    assert p.locator("#run-gate").count() == 1, "the cost owner must see 'Run gate'"
    farid.close()

    # --- Omar, the operator: Monitor, a trace, Sources, Audit (verify)
    omar = Session(browser, live, "omar")
    _expect_nav(omar, {"ask", "monitor", "sources", "evals", "gate", "audit"})
    p = omar.goto("/monitor")
    omar.ok("monitor")
    assert p.locator("table a[href^='/traces/']").count() >= 1
    p.locator("table a[href^='/traces/']").first.click()
    p.wait_for_load_state()
    omar.ok("trace")
    assert p.locator("td", has_text="retrieve").count() >= 1
    omar.goto("/sources")
    omar.ok("sources")
    p = omar.goto("/audit")
    omar.ok("audit")
    assert p.locator("td", has_text="tools.executed").count() >= 1, "the refund is not in the audit log"
    assert p.locator("td", has_text="approval.approved").count() >= 1
    p.click("#verify")
    p.wait_for_load_state()
    omar.ok("audit-verified")
    assert "Intact" in p.locator("#verify-result").inner_text()
    _operator_evals_and_gate(omar, live)
    omar.close()

    # --- Casey, a contractor: only Ask
    casey = Session(browser, live, "casey")
    casey.ok("ask-contractor")
    _expect_nav(casey, {"ask"})
    casey.close()


def _operator_evals_and_gate(omar: Session, live: Served) -> None:
    """Omar starts a (small) eval run through the API and reads it on the Evals page; runs the gate from
    the Gate page and sees the result appear; the pages fit a phone's width."""
    import time

    api = omar.context.request
    r = api.post(
        live.url + "/api/evals",
        headers=live.headers("omar"),
        data={"cases": EVAL_CASES, "permission_probes": False, "concurrency": 2},
    )
    assert r.status == 202, r.text()
    job = r.json()
    p = omar.goto(f"/evals/{job['id']}")
    omar.ok("eval-job")
    deadline = time.monotonic() + 300
    while (status := api.get(live.url + job["href"], headers=live.headers("omar")).json())[
        "status"
    ] == "running":
        assert time.monotonic() < deadline, "the eval run did not finish"
        time.sleep(1)
    assert status["status"] == "succeeded", status
    run_id = status["summary"]["run_id"]
    p = omar.goto("/evals")
    omar.ok("evals")
    assert p.locator("#start-eval-run").count() == 1
    row = p.locator(f"tr[data-run='{run_id}']")
    assert row.count() == 1 and "normal" in row.inner_text()
    row.locator(f"a[href='/evals/{run_id}']").click()
    p.wait_for_load_state()
    omar.ok("eval-run")
    assert p.locator("#thresholds tbody tr").count() >= 1
    assert (
        p.locator("#thresholds .badge", has_text="pass").count()
        + p.locator("#thresholds .badge", has_text="FAIL").count()
        == p.locator("#thresholds tbody tr").count()
    )

    p = omar.goto("/gate")
    omar.ok("gate-before")
    p.click("#run-gate")
    p.wait_for_selector("#job-result", timeout=240_000)  # the page refreshes itself until the run is done
    omar.ok("gate-run")
    assert "Gate run" in p.locator("#job-result").inner_text()
    p.click("#job-result a[href='/gate']")
    p.wait_for_load_state()
    omar.ok("gate")
    assert p.locator("#gate-checks tbody tr").count() == 7
    assert "signature verified" in p.locator("#gate-verification").inner_text()
    history = p.locator("#gate-history tbody tr")
    assert history.count() >= 1 and "yes" in history.first.inner_text()
    for fmt in ("md", "html", "json"):
        href = p.locator(f"#gate-latest ~ p a[href$='/{fmt}']").first.get_attribute("href")
        assert href, fmt
        download = api.get(live.url + href)
        assert download.status == 200 and "attachment" in download.headers["content-disposition"]

    phone = omar.context.browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.add_cookies(omar.context.cookies())
    page = phone.new_page()
    for path in ("/gate", "/evals"):
        page.goto(live.url + path)
        wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        page.screenshot(path=str(ARTIFACTS / f"omar-phone-{path.strip('/')}.png"), full_page=True)
        assert wide <= 1, f"{path} is {wide}px wider than a phone screen"
    phone.close()


def test_login_with_a_bad_token_shows_the_form_again(browser: Any, live: Served) -> None:
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(live.url + "/ask")
    assert page.url.endswith("/login")
    page.fill("#token", "chr_nope")
    page.click("button[type=submit]")
    assert page.locator(".error").inner_text() == "That token is not valid."
    assert not [c for c in ctx.cookies() if c["name"] == "charter_session"]
    page.fill("#token", live.tokens["casey"])
    page.click("button[type=submit]")
    page.wait_for_load_state()
    (cookie,) = ctx.cookies()
    assert cookie["name"] == "charter_session" and cookie["value"].startswith("chs_"), cookie
    assert live.tokens["casey"] not in cookie["value"], "the cookie is a session, never the API token"
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["secure"], cookie
    assert page.evaluate("document.cookie") == "", "page scripts must not see the session"
    # the REST API does not accept the session cookie, even from the console's own origin
    assert ctx.request.post(live.url + "/api/audit/verify").status == 401
    # logging out ends the session on the server: a copy of the cookie is worthless afterwards
    page.click("form.who button[type=submit]")
    page.wait_for_load_state()
    assert page.url.endswith("/login")
    replay = browser.new_context()
    replay.add_cookies([cookie])
    again = replay.new_page()
    again.goto(live.url + "/ask")
    assert again.url.endswith("/login"), "a logged-out session must not open pages"
    replay.close()
    ctx.close()
