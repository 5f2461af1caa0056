"""The operator page in a real headless Chromium (Debian's), against a real server, with no
network beyond 127.0.0.1: sign in as the admin and as a tenant, deploy, call an agent, load
and unload a mod, and watch the feed show a worker crash and its restart.

A failing test saves the page's screenshot beside its temporary files (the path is in the
failure's report). ``PLUGHOST_SCREENSHOT=<file>`` saves one of the admin's page, as the
README shows it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from plughost.api.ui import MAX_STREAMS

from .server import ServerProcess
from .test_docs_page import offline_page

ADMIN = "admin-token-for-the-operator-page"
SHOWN = 20_000
"""Milliseconds the page has to show a change (it refreshes every 2 s, and at each entry
of the feed)."""

CRASHER = """\
import os
from agents.basic_agent import BasicAgent

class CrashAgent(BasicAgent):
    name = "Crash"
    metadata = {"name": "Crash", "description": "Ends its worker",
                "parameters": {"type": "object", "properties": {}}}
    def perform(self, **kwargs):
        os._exit(3)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    started = ServerProcess(tmp_path_factory.mktemp("operator"), admin_token=ADMIN).start()
    yield started
    assert started.stop()


@pytest.fixture
def page(
    browser: Browser, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Page, list[str], list[str]]]:
    """A tab that may reach only 127.0.0.1; the URLs it was refused, and its script errors."""
    tab, refused = offline_page(browser)
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab, refused, errors
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        shot = tmp_path / "failure.png"
        tab.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the page when it failed: {shot}")
    tab.context.close()


def sign_in(tab: Page, server: ServerProcess, token: str) -> None:
    tab.goto(server.url + "/")
    tab.get_by_test_id("login").locator("input[name=token]").fill(token)
    tab.get_by_role("button", name="Sign in").click()
    expect(tab.get_by_test_id("who")).to_be_visible(timeout=SHOWN)
    expect(tab.locator(".loading")).to_have_count(0)  # the note shown before the script ran


def feed_text(tab: Page) -> str:
    text: str = tab.get_by_test_id("feed").inner_text()
    return text


def test_the_admin_deploys_calls_and_loads_and_unloads_a_mod(
    server: ServerProcess, page: tuple[Page, list[str], list[str]]
) -> None:
    tab, refused, errors = page
    sign_in(tab, server, ADMIN)
    expect(tab.get_by_test_id("who")).to_contain_text("admin")
    expect(tab.get_by_test_id("status")).to_have_text("healthy", timeout=SHOWN)

    # Deploy the example bundle the form holds, as tenant alice.
    form = tab.get_by_test_id("deploy-form")
    form.locator("input[name=tenant]").fill("alice")
    form.get_by_role("button", name="Deploy").click()
    expect(tab.get_by_test_id("deploy-result")).to_contain_text("alice v1 deployed", timeout=SHOWN)
    expect(tab.get_by_test_id("deploy-result")).to_contain_text("tenant token")
    row = tab.get_by_test_id("tenant-alice")
    expect(row).to_be_visible(timeout=SHOWN)
    expect(tab.get_by_test_id("feed")).to_contain_text("v1 deployed", timeout=SHOWN)

    # Call its agent, with arguments its schema checks first.
    row.click()
    agent = tab.get_by_test_id("agent-Notifier")
    agent.get_by_role("button", name="Call").click()
    expect(agent.get_by_role("alert")).to_contain_text("message is required", timeout=SHOWN)
    agent.locator("input[name=message]").fill("hi")
    agent.get_by_role("button", name="Call").click()
    expect(agent.get_by_test_id("call-output")).to_have_text('"posted: hi"', timeout=SHOWN)
    expect(tab.get_by_test_id("chart-alice")).to_contain_text("alice: 1 calls", timeout=SHOWN)
    expect(tab.get_by_test_id("namespaces")).to_contain_text("Namespace('alice'")

    # Load a mod, see it, unload it, see the report.
    mods = tab.get_by_test_id("mods")
    tab.get_by_test_id("mod-form").locator("input[name=mod_config]").fill('{"max_items": 10}')
    tab.get_by_test_id("mod-form").get_by_role("button", name="Load").click()
    expect(tab.get_by_test_id("mod-report")).to_have_text("loaded shared_cache", timeout=SHOWN)
    mod_row = tab.get_by_test_id("mod-shared_cache")
    expect(mod_row).to_contain_text("loaded", timeout=SHOWN)
    mod_row.get_by_role("button", name="unload").click()
    expect(tab.get_by_test_id("mod-report")).to_contain_text("shared_cache:", timeout=SHOWN)
    expect(mod_row).to_have_count(0, timeout=SHOWN)
    expect(mods).to_contain_text("unloaded shared_cache: its code was freed", timeout=SHOWN)
    expect(tab.get_by_test_id("feed")).to_contain_text("mod shared_cache unloaded")
    assert "mod shared_cache loaded" in feed_text(tab)

    screenshot = os.environ.get("PLUGHOST_SCREENSHOT")
    if screenshot:
        tab.set_viewport_size({"width": 1500, "height": 1100})
        tab.evaluate("window.scrollTo(0, 0)")
        # A tenant token, even a test server's, is not for a README.
        tab.evaluate("document.querySelector('[data-testid=deploy-result]').remove()")
        tab.screenshot(path=screenshot, full_page=False)
    assert refused == []
    assert errors == []


def test_the_feed_shows_a_worker_crash_and_its_restart(
    server: ServerProcess, page: tuple[Page, list[str], list[str]]
) -> None:
    tab, refused, errors = page
    headers = {"Authorization": f"Bearer {ADMIN}"}
    bundle = {"agents": [{"filename": "crash_agent.py", "source": CRASHER}]}
    deployed = httpx.put(
        f"{server.url}/api/tenants/crashy/bundle?placement=process",
        json=bundle,
        headers=headers,
        timeout=60,
    )
    assert deployed.status_code in (200, 201), deployed.text
    sign_in(tab, server, ADMIN)
    worker = tab.get_by_test_id("worker-crashy")
    expect(worker).to_contain_text("ready", timeout=SHOWN)

    tab.get_by_test_id("tenant-crashy").click()
    agent = tab.get_by_test_id("agent-Crash")
    agent.get_by_role("button", name="Call").click()
    expect(agent.get_by_role("alert")).to_contain_text("503", timeout=SHOWN)

    feed = tab.get_by_test_id("feed")
    expect(feed).to_contain_text("ready -> restarting", timeout=SHOWN)
    expect(feed).to_contain_text("restarting -> ready", timeout=SHOWN)
    text = feed_text(tab)
    assert text.index("restarting -> ready") < text.index("ready -> restarting")  # newest first
    expect(worker).to_contain_text("ready", timeout=SHOWN)
    cells = worker.locator("td").all_inner_texts()
    assert cells[3] == "1", cells  # one restart
    # Only worker entries, when filtered so.
    tab.locator("select[name=feed-kind]").select_option("workers")
    for line in feed.locator("li").all_inner_texts():
        assert "worker_" in line, line
    assert refused == []
    assert errors == []


def test_a_tenant_token_sees_its_own_tenant_only(
    server: ServerProcess, page: tuple[Page, list[str], list[str]]
) -> None:
    tab, refused, errors = page
    headers = {"Authorization": f"Bearer {ADMIN}"}
    tokens = {}
    for tenant in ("carol", "dave"):
        source = (
            "from agents.basic_agent import BasicAgent\n"
            f"class Echo(BasicAgent):\n    name = 'Echo'\n"
            f"    def perform(self, **kwargs):\n        return {tenant!r}\n"
        )
        answer = httpx.put(
            f"{server.url}/api/tenants/{tenant}/bundle",
            json={"agents": [{"filename": "echo_agent.py", "source": source}]},
            headers=headers,
            timeout=60,
        )
        tokens[tenant] = answer.json()["token"]
    # dave is refused something: carol must not hear of it.
    httpx.get(
        f"{server.url}/api/tenants/carol", headers={"Authorization": f"Bearer {tokens['dave']}"}
    )

    sign_in(tab, server, tokens["carol"])
    expect(tab.get_by_test_id("who")).to_have_text(
        "tenant carol: sees its own tenant and the global mods"
    )
    expect(tab.get_by_test_id("tenant-carol")).to_be_visible(timeout=SHOWN)
    expect(tab.get_by_test_id("feed")).to_contain_text("v1 deployed", timeout=SHOWN)
    tenants = tab.get_by_test_id("tenants").inner_text()
    assert "dave" not in tenants and "alice" not in tenants and "crashy" not in tenants
    for shown in (feed_text(tab), tab.locator("body").inner_text()):
        assert "dave" not in shown and "alice" not in shown, shown
    form = tab.get_by_test_id("deploy-form").locator("input[name=tenant]")
    expect(form).to_have_value("carol")
    expect(form).not_to_be_editable()
    agent = tab.get_by_test_id("agent-Echo")
    agent.get_by_role("button", name="Call").click()
    expect(agent.get_by_test_id("call-output")).to_have_text('"carol"', timeout=SHOWN)
    # Its own refused request is in its feed.
    httpx.delete(
        f"{server.url}/api/tenants/carol", headers={"Authorization": f"Bearer {tokens['carol']}"}
    )
    expect(tab.get_by_test_id("feed")).to_contain_text(
        "DELETE /api/tenants/carol: 403", timeout=SHOWN
    )
    assert refused == []
    assert errors == []


def test_the_token_is_kept_for_the_tab_only_and_a_bad_one_is_refused(
    server: ServerProcess, browser: Browser, page: tuple[Page, list[str], list[str]]
) -> None:
    tab, refused, errors = page
    sign_in(tab, server, ADMIN)
    storage = json.loads(tab.evaluate("JSON.stringify({...sessionStorage})"))
    assert storage == {"plughost-token": ADMIN}
    assert tab.evaluate("localStorage.length") == 0
    assert tab.context.cookies() == []
    tab.reload()
    expect(tab.get_by_test_id("who")).to_contain_text("admin", timeout=SHOWN)

    other, other_refused = offline_page(browser)  # another tab, of another browser context
    try:
        other.goto(server.url + "/")
        expect(other.get_by_test_id("login")).to_be_visible(timeout=SHOWN)
        other.locator("input[name=token]").fill("not-a-token")
        other.get_by_role("button", name="Sign in").click()
        expect(other.get_by_role("alert")).to_have_text("That token is not valid here.")
        assert other.evaluate("sessionStorage.length") == 0
        assert other_refused == []
    finally:
        other.context.close()
    # The admin's feed heard of it.
    expect(tab.get_by_test_id("feed")).to_contain_text("/api/whoami: 401", timeout=SHOWN)
    assert refused == []
    assert errors == []


def test_the_page_loads_nothing_from_elsewhere(server: ServerProcess) -> None:
    answer = httpx.get(server.url + "/")
    assert answer.status_code == 200
    policy = answer.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy
    for url in re.findall(r"""(?:src|href)=["']([^"']+)["']""", answer.text):
        assert url.startswith("/") or url.startswith("data:"), url
    imports = re.search(r'<script type="importmap">(.*?)</script>', answer.text, re.S)
    assert imports is not None
    for url in json.loads(imports.group(1))["imports"].values():
        assert url.startswith("/ui-assets/"), url
        assert httpx.get(server.url + url).status_code == 200, url


def test_a_feed_client_that_goes_away_leaves_no_error_behind(server: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    for _ in range(3):
        with httpx.stream("GET", f"{server.url}/api/feed", headers=headers, timeout=30) as feed:
            assert feed.status_code == 200
            assert feed.headers["content-type"].startswith("text/event-stream")
            assert next(feed.iter_lines()) == ": feed"
    # The server is still well, and wrote no error of the streams it ended.
    assert httpx.get(f"{server.url}/api/health").json()["status"] == "healthy"
    log = server.log.read_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log


def test_a_token_holds_a_bounded_number_of_feed_streams(server: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    readers = []  # kept: a reader let go closes its stream
    with contextlib.ExitStack() as streams:
        for _ in range(MAX_STREAMS):
            feed = streams.enter_context(
                httpx.stream("GET", f"{server.url}/api/feed", headers=headers, timeout=30)
            )
            readers.append(feed.iter_lines())
            assert next(readers[-1]) == ": feed"  # open, and counted
        refused = httpx.get(f"{server.url}/api/feed", headers=headers, timeout=30)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_streams"
    # Once they are closed, the token follows again.
    with httpx.stream("GET", f"{server.url}/api/feed", headers=headers, timeout=30) as feed:
        assert feed.status_code == 200
