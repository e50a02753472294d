"""``confab console`` in a real browser: headless Chromium (Debian's), driven by Playwright.

A real ``confab serve`` with authentication required (keys made with ``confab keys new``,
the config written here), the pizza flow's price service in a thread, and the console on a
port of its own, both on loopback. Each test signs in as a person would and reads what the
page shows; screenshots of each page go to the run's temporary directory (the path is
printed). Parts that need an RPC this server answers UNIMPLEMENTED (GetAnalytics,
AbandonWebhook, SendAgentMessage) check that the console says so cleanly, then skip with
the reason: they run for real once the server implements them.

Chromium is found at /usr/bin/chromium (``apt-get install chromium``; ``.ci/run`` installs
it when missing). Without it these tests are skipped, unless ``CONFAB_REQUIRE_CHROMIUM=1``
(CI sets it), when they fail. Playwright's own browsers are never downloaded.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.tools.price_service import PriceService
from tests.support import ServerProcess, confab_argv, message, price_webhook_config, run_confab

pytestmark = pytest.mark.integration  # every test here starts a server, a console and a browser

CHROMIUM = Path("/usr/bin/chromium")
REQUIRED = os.environ.get("CONFAB_REQUIRE_CHROMIUM") == "1"
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-extensions",
]
CONSOLE_LINE = re.compile(r"serving on (http://\S+)")
WAIT_MS = 15_000
WEBHOOK_DELAY_S = 8.0  # long enough to find the conversation while its webhook is in flight

try:
    from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
except ImportError:  # pragma: no cover - a dev install has it
    sync_playwright = None  # type: ignore[assignment]


def _unavailable() -> str | None:
    if sync_playwright is None:
        return "Playwright for Python is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


# The world: keys, a server, the price service, the console ---------------------------------


@dataclass
class World:
    server: ServerProcess
    prices: PriceService
    console_url: str
    keys: dict[str, str]  # name -> the key itself
    shots: Path

    def engine(self) -> pb_grpc.MCPEngineStub:
        return pb_grpc.MCPEngineStub(self.server.channel())

    def md(self, name: str) -> tuple[tuple[str, str]]:
        return (("x-api-key", self.keys[name]),)

    def send(
        self, conversation: str, text: str = "", *, tenant: str = "acme", payload: str = "", flow: str = ""
    ) -> Any:
        request = message(conversation, text, tenant=tenant)
        request.content.payload = payload
        if flow:
            request.processing_hints.force_flow = flow
        return self.engine().ProcessMessage(request, metadata=self.md(f"app-{tenant}"), timeout=30)

    def send_later(
        self, conversation: str, text: str, *, flow: str = "pizza"
    ) -> Future[pb.ProcessMessageResponse]:
        request = message(conversation, text)
        request.processing_hints.force_flow = flow
        future: Future[pb.ProcessMessageResponse] = self.engine().ProcessMessage.future(
            request, metadata=self.md("app-acme"), timeout=60
        )
        return future


def _new_key(*args: str) -> tuple[str, str]:
    """A key made by ``confab keys new ARGS``: (the key, its auth.api_keys entry as YAML)."""
    made = run_confab("keys", "new", *args)
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    key = lines[1].strip()
    entry = "\n".join(lines[5:])  # the entry itself, under "auth:\n  api_keys:\n"
    return key, entry


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    reason = _unavailable()
    if reason is not None:
        if REQUIRED:
            pytest.fail(f"{reason} (and CONFAB_REQUIRE_CHROMIUM=1)", pytrace=False)
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("console")
    shots = root / "screenshots"
    shots.mkdir()
    keys, entries = {}, []
    for name, args in {
        "operator": ("--role", "operator", "--name", "ops"),
        "admin-acme": ("--tenant", "acme", "--role", "admin", "--name", "acme-admin"),
        "admin-globex": ("--tenant", "globex", "--role", "admin", "--name", "globex-admin"),
        "app-acme": ("--tenant", "acme", "--name", "acme-app"),
        "app-globex": ("--tenant", "globex", "--name", "globex-app"),
    }.items():
        keys[name], entry = _new_key(*args)
        entries.append(entry)
    prices = PriceService().start()
    auth = "auth:\n  mode: required\n  api_keys:\n" + "\n".join(entries) + "\n"
    config = price_webhook_config(root / "confab.yaml", prices.url, timeout_s=30.0, more_yaml=auth)
    server = ServerProcess(root / "data", shards=1, extra=["--config", str(config)])
    console_log = root / "console.log"
    console: subprocess.Popen[bytes] | None = None
    try:
        server.start()
        with console_log.open("wb") as log:
            console = subprocess.Popen(
                confab_argv("console", "--target", server.address, "--listen", "127.0.0.1:0"),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "CONFAB_TEST_RUN": server.marker},
            )
        url = _wait_for_console(console, console_log)
        print(f"\nconsole screenshots: {shots}")
        yield World(server, prices, url, keys, shots)
    finally:
        stopped = None
        if console is not None:
            console.terminate()
            try:
                stopped = console.wait(10)
            except subprocess.TimeoutExpired:
                console.kill()
                console.wait(10)
        server.stop()
        prices.stop()
        if console is not None:
            assert stopped == 0, "SIGTERM did not stop the console at once:\n" + console_log.read_text()


def _wait_for_console(console: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = CONSOLE_LINE.search(log.read_text(errors="replace"))
        if found:
            return found.group(1)
        if console.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError("confab console did not start:\n" + log.read_text(errors="replace"))


@pytest.fixture(scope="module")
def browser(world: World) -> Iterator[Browser]:
    assert sync_playwright is not None
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    made = browser.new_context(viewport={"width": 1360, "height": 900})
    made.set_default_timeout(WAIT_MS)
    try:
        yield made
    finally:
        made.close()


def sign_in(context: BrowserContext, world: World, key_name: str) -> Page:
    page = context.new_page()
    page.goto(world.console_url + "/login")
    page.fill("#secret", world.keys[key_name])
    page.click("button[type=submit]")
    expect(page.locator("#who")).to_be_visible()
    return page


def shot(page: Page, world: World, name: str) -> Path:
    path = world.shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def flash(page: Page) -> str:
    return " ".join(page.locator(".flash").all_inner_texts())


# The tests ----------------------------------------------------------------------------------


def test_signing_in_keeps_the_key_on_the_server_and_a_wrong_key_is_refused(
    world: World, context: BrowserContext
) -> None:
    page = context.new_page()
    page.goto(world.console_url + "/conversations")
    assert page.url.endswith("/login")  # no session: the login page
    shot(page, world, "login")
    page.fill("#secret", "cfb_not-a-key-of-this-server")
    page.click("button[type=submit]")
    expect(page.locator("div.error")).to_contain_text("UNAUTHENTICATED")
    assert not context.cookies()
    page.fill("#secret", world.keys["app-acme"])  # a key, but neither admin nor operator
    page.click("button[type=submit]")
    expect(page.locator("div.error")).to_contain_text("PERMISSION_DENIED")

    page = sign_in(context, world, "operator")
    expect(page.locator("#who")).to_have_text("operator")
    (cookie,) = context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # the page's script cannot read it
    assert world.keys["operator"] not in page.content() and world.keys["operator"] not in page.url
    assert world.keys["operator"] not in cookie["value"]
    # The cluster page: health, the shard, the host, the virtual shards, live rates.
    page.goto(world.console_url + "/cluster")
    expect(page.locator("#serving")).to_have_text("SERVING")
    expect(page.locator("#shards tbody tr")).to_have_count(1)
    expect(page.locator("#shards tbody")).to_contain_text("healthy")
    expect(page.locator("#hosts tbody tr")).to_have_count(1)
    expect(page.locator("#vshards tbody tr")).not_to_have_count(0)
    expect(page.locator("#rates-chart canvas")).to_have_count(1)  # uPlot drew the rates
    expect(page.locator("#now-calls")).not_to_have_text("…")
    shot(page, world, "cluster")
    # Signing out ends the session: the same cookie no longer opens a page.
    page.click("text=Sign out")
    expect(page.locator("#secret")).to_be_visible()
    page.goto(world.console_url + "/cluster")
    assert page.url.endswith("/login")


def test_a_conversation_stuck_behind_a_slow_webhook_comes_first_and_opens(
    world: World, context: BrowserContext
) -> None:
    for n in range(3):
        world.send(f"calm-{n}", "hi", flow="pizza")
    world.send("slow-order", "hi", flow="pizza")
    world.prices.delay_s = WEBHOOK_DELAY_S
    try:
        pricing = world.send_later("slow-order", "2 large pizzas")
        time.sleep(0.3)
        queued = world.send_later("slow-order", "yes")
        page = sign_in(context, world, "operator")
        page.goto(world.console_url + "/conversations?tenant=acme")
        first = page.locator("#conversations tbody tr").first
        expect(first).to_have_attribute("data-conversation", "slow-order")
        expect(first.locator(".why")).to_contain_text("webhook price")
        expect(first.locator(".why")).to_contain_text("1 queued")
        shot(page, world, "conversations")
        # The waiting-on-webhook filter finds it alone (on this server by asking the shards).
        page.check("input[name=webhook]")
        page.click("#filters button[type=submit]")
        expect(page.locator("#conversations tbody tr")).to_have_count(1)
        page.click("#conversations a:text('slow-order')")
        expect(page.locator("#webhook")).to_have_text("price")
        expect(page.locator("#mailbox")).to_have_text("2")  # the turn waiting, and one behind it
        expect(page.locator("#queued tbody tr")).to_have_count(2)
        expect(page.locator("#queued")).to_contain_text("yes")
        expect(page.locator("#transcript")).to_contain_text("hi")
        shot(page, world, "conversation-webhook")
        assert pricing.result().current_state == "confirm"
        assert queued.result().current_state == "ordered"
        # The page refreshes by itself: the webhook has answered, the mailbox is empty.
        expect(page.locator("#webhook")).to_have_text("none", timeout=WAIT_MS)
        expect(page.locator("#current-state")).to_have_text("ordered")
        expect(page.locator("#transcript")).to_contain_text("2 large pizzas")
    finally:
        world.prices.delay_s = 0.0


def test_abandoning_a_webhook(world: World, context: BrowserContext) -> None:
    world.send("abandoned", "hi", flow="pizza")
    world.prices.delay_s = WEBHOOK_DELAY_S
    try:
        pricing = world.send_later("abandoned", "3 small pizzas")
        time.sleep(0.3)
        page = sign_in(context, world, "operator")
        page.goto(world.console_url + "/conversation?tenant=acme&id=abandoned")
        expect(page.locator("#webhook")).to_have_text("price")
        page.click("button:text('Abandon the webhook')")
        expect(page.locator("h1")).to_contain_text("Abandon the webhook")  # the confirmation page
        page.fill("input[name=reason]", "price service hangs")
        page.click("#confirm")
        said = flash(page)
        if "UNIMPLEMENTED" in said:
            assert "not available on this server" in said
            pytest.skip("AbandonWebhook answers UNIMPLEMENTED on this server; the console says so")
        assert "abandon_webhook:" in said, said
        assert pricing.result().current_state != "confirm"  # the failure route, at once
    finally:
        world.prices.delay_s = 0.0


def test_resume_a_conversation_handed_to_a_person(world: World, context: BrowserContext) -> None:
    world.send("wants-a-person", payload="RETURNS", flow="support")
    handed = world.send("wants-a-person", payload="HUMAN", flow="support")
    assert "handoff" in handed.actions_performed
    page = sign_in(context, world, "admin-acme")
    expect(page.locator("#who")).to_have_text("admin of acme")
    page.goto(world.console_url + "/conversations?handoff=1")
    row = page.locator("#conversations tbody tr[data-conversation='wants-a-person']")
    expect(row.locator(".why")).to_contain_text("handed off")
    row.locator("a").click()
    expect(page.locator("#handoff")).to_have_text("handed to a person")
    expect(page.locator("#agent-form")).to_be_visible()
    shot(page, world, "conversation-handoff")
    page.click("button:text('Resume from handoff')")
    expect(page.locator("h1")).to_contain_text("Resume from handoff")
    shot(page, world, "confirm")
    page.click("#confirm")
    expect(page.locator(".flash.ok")).to_contain_text("resume")
    expect(page.locator("#handoff")).to_have_text("no")
    expect(page.locator("#agent-form")).to_have_count(0)
    # The flow answers again.
    assert "handoff_hold" not in world.send("wants-a-person", "when are you open").actions_performed


def test_answering_as_a_person(world: World, context: BrowserContext) -> None:
    world.send("agent-chat", payload="HUMAN", flow="support")
    page = sign_in(context, world, "admin-acme")
    page.goto(world.console_url + "/conversation?tenant=acme&id=agent-chat")
    page.fill("#agent-form input[name=agent]", "Dana")
    page.fill("#agent-form input[name=text]", "Hello, Dana here: how can I help?")
    page.click("#agent-form button[type=submit]")
    said = flash(page)
    if "UNIMPLEMENTED" in said:
        assert "not available on this server" in said
        pytest.skip("SendAgentMessage answers UNIMPLEMENTED on this server; the console says so")
    assert "message" in said and "error" not in (page.locator(".flash").first.get_attribute("class") or "")
    expect(page.locator("#transcript")).to_contain_text("Dana here")


def test_the_event_tail_updates_as_messages_arrive(world: World, context: BrowserContext) -> None:
    page = sign_in(context, world, "operator")
    page.goto(world.console_url + "/events?tenant=acme")
    expect(page.locator("#tail-status")).to_have_text("following")
    conversation = f"tailed-{uuid.uuid4().hex[:6]}"
    world.send(conversation, "hi", flow="pizza")
    world.send(conversation, payload="ORDER", flow="pizza")
    rows = page.locator(f"#events tbody tr:has(td:text-is('{conversation}'))")
    expect(rows.first).to_be_visible()
    expect(
        page.locator(f"#events tbody tr[data-type=transition]:has(td:text-is('{conversation}'))").first
    ).to_contain_text("greet → take_order")
    shot(page, world, "events")


def test_analytics_per_flow(world: World, context: BrowserContext) -> None:
    world.send("counted", "hi", flow="pizza")
    world.send("counted", payload="ORDER", flow="pizza")
    page = sign_in(context, world, "admin-acme")
    page.goto(world.console_url + "/analytics?range=1h")
    expect(page.locator("input[name=tenant]")).to_have_value("acme")  # an admin's own tenant
    problem = page.locator("div.error")
    if problem.count() and "UNIMPLEMENTED" in problem.inner_text():
        expect(problem).to_contain_text("not available on this server")
        shot(page, world, "analytics-unavailable")
        pytest.skip("GetAnalytics answers UNIMPLEMENTED on this server; the console says so")
    flow = page.locator("#flow-pizza")
    expect(flow).to_be_visible()
    assert int(flow.locator("[data-count=sessions_started]").inner_text()) >= 1
    expect(flow.locator(".chart canvas")).to_have_count(1)  # the series, drawn by uPlot
    expect(flow.locator(".graph .node[data-state=take_order]")).to_have_count(1)
    expect(flow.locator(".graph path[data-edge='greet>take_order']")).to_have_count(1)
    shot(page, world, "analytics")


def test_a_tenant_admin_sees_only_its_own_tenant(world: World, context: BrowserContext) -> None:
    world.send("globex-chat", "hi", tenant="globex")
    world.send("acme-secret", "hi", flow="pizza")
    page = sign_in(context, world, "admin-globex")
    expect(page.locator("#who")).to_have_text("admin of globex")
    assert page.url.endswith("/conversations")  # an admin starts at its conversations
    expect(page.locator("#conversations tbody tr[data-conversation='globex-chat']")).to_have_count(1)
    expect(page.locator("#conversations tbody")).not_to_contain_text("acme")
    expect(page.locator("input[name=tenant]")).to_have_count(0)  # no tenant to choose
    page.goto(world.console_url + "/conversations?tenant=acme")
    expect(page.locator("div.error")).to_contain_text("PERMISSION_DENIED")
    page.goto(world.console_url + "/conversation?tenant=acme&id=acme-secret")
    expect(page.locator("div.error")).to_contain_text("PERMISSION_DENIED")
    expect(page.locator("#transcript")).to_have_count(0)
    page.goto(world.console_url + "/cluster")
    expect(page.locator("div.error")).to_contain_text("needs the operator role")
    page.goto(world.console_url + "/events?tenant=acme")
    expect(page.locator("#tail-error")).to_contain_text("PERMISSION_DENIED")
    shot(page, world, "admin-denied")
    # An action on another tenant's conversation, confirmed, is refused by the server too.
    page.goto(world.console_url + "/conversation?tenant=globex&id=globex-chat")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    answer = context.request.post(
        world.console_url + "/conversation/action",
        form={
            "csrf": csrf or "",
            "tenant": "acme",
            "id": "acme-secret",
            "action": "reset",
            "confirmed": "yes",
        },
        headers={"Origin": world.console_url},
    )
    assert answer.ok  # back to the page, with the refusal in its message
    page.goto(world.console_url + "/conversation?tenant=globex&id=globex-chat")
    state = world.engine().GetConversationState(
        pb.GetConversationStateRequest(tenant_context={"tenant_id": "acme"}, conversation_id="acme-secret"),
        metadata=world.md("app-acme"),
    )
    assert state.conversation_state.message_count == 1  # not reset


def test_actions_need_the_sessions_csrf_token_and_this_origin(world: World, context: BrowserContext) -> None:
    page = sign_in(context, world, "operator")
    world.send("guarded", "hi", flow="pizza")
    form: dict[str, str | float | bool] = {
        "tenant": "acme",
        "id": "guarded",
        "action": "reset",
        "confirmed": "yes",
    }
    url = world.console_url + "/conversation/action"
    assert context.request.post(url, form={**form, "csrf": "forged"}).status == 403
    assert context.request.post(url, form=form).status == 403
    csrf = page.locator("input[name=csrf]").first.get_attribute("value") or ""
    other = context.request.post(url, form={**form, "csrf": csrf}, headers={"Origin": "http://evil.example"})
    assert other.status == 403
    state = world.send("guarded", "hi", flow="pizza")
    assert state.conversation_state.message_count == 2  # never reset
