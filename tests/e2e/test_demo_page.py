"""The demo page in a real browser: Debian's Chromium driven by Playwright, headless."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from opsgate.demo.page import DemoPage
from opsgate.demo.session import ONCALL_CHAT, DemoSession

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "demo.png"
WAIT_MS = 20_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)"
)


@pytest.fixture
async def page_url(tmp_path: Path) -> AsyncIterator[str]:
    async with DemoSession(tmp_path) as demo, DemoPage(demo, port=0) as page:
        yield page.url


def _artefacts() -> Path:
    where = os.environ.get("OPSGATE_TEST_ARTEFACTS") or tempfile.gettempdir()
    path = Path(where)
    path.mkdir(parents=True, exist_ok=True)
    return path


async def test_fire_approve_and_watch_the_cluster_change(page_url: str) -> None:
    expect = playwright_api.expect
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        page = await browser.new_page(viewport={"width": 1500, "height": 900})
        console_errors: list[str] = []
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: console_errors.append(str(exc)))
        try:
            await page.goto(page_url)
            await expect(page.locator("#live")).to_have_text("live", timeout=WAIT_MS)
            checkout = page.locator('.deploy[data-name="checkout"] .pod')
            await expect(checkout).to_have_count(2)
            before = set(await checkout.evaluate_all("pods => pods.map(p => p.dataset.pod)"))

            await page.click('#scenarios button[data-scenario="crashloop"]')
            card = page.locator(".msg.bot", has_text="KubePodCrashLooping").first
            approve = card.locator(".kb button", has_text="Approve")
            await expect(approve).to_be_visible(timeout=WAIT_MS)
            # The card's inline keyboard is rendered whole: the silence and ack buttons too.
            await expect(card.locator(".kb button", has_text="🔕 1 h")).to_be_visible()
            await expect(card.locator(".kb button", has_text="👀")).to_be_visible()
            # HTML formatting arrives as entities and is rendered as elements, not markup.
            await expect(card.locator(".text b", has_text="KubePodCrashLooping")).to_be_visible()
            card_id = await card.get_attribute("data-id")

            await page.click('#people button[data-person="approver1"]')
            await approve.click()
            edited = page.locator(f'.msg[data-id="{card_id}"]')
            await expect(edited).to_contain_text("Approved by @alice", timeout=WAIT_MS)
            await expect(edited.locator(".edited")).to_be_visible()
            reply = page.locator(".msg.bot", has=page.locator(".quote"), has_text="Succeeded")
            await expect(reply).to_be_visible(timeout=WAIT_MS)
            await expect(reply.locator(".quote")).to_contain_text("KubePodCrashLooping")

            # The restart replaced both pods: none of the old names is left.
            for name in before:
                await expect(page.locator(f'.pod[data-pod="{name}"]')).to_have_count(
                    0, timeout=WAIT_MS
                )
            await expect(checkout).to_have_count(2, timeout=WAIT_MS)

            await edited.locator("button.reply").click()
            await page.fill("#text", "/timeline")
            await page.press("#text", "Enter")
            timeline = page.locator(".msg.bot", has_text="Timeline INC-")
            await expect(timeline).to_contain_text("approval_signed", timeout=WAIT_MS)
            await expect(page.locator(".msg.mine", has_text="/timeline")).to_be_visible()
            if os.environ.get("OPSGATE_UPDATE_SCREENSHOT") == "1":
                await edited.scroll_into_view_if_needed()
                await page.screenshot(path=str(SCREENSHOT))
            assert console_errors == []
        except BaseException:
            shot = _artefacts() / "demo-page-failure.png"
            await page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot of the failing page: {shot}")
            raise
        finally:
            await browser.close()


async def test_the_page_refuses_writes_from_other_sites(page_url: str) -> None:
    async with httpx.AsyncClient(base_url=page_url) as client:
        forged = await client.post(
            "/api/say",
            json={"person": "approver1", "chat_id": ONCALL_CHAT, "text": "/incidents"},
            headers={"Origin": "https://evil.example"},
        )
        assert forged.status_code == 403
        form = await client.post("/api/fire", data={"scenario": "crashloop"})
        assert form.status_code == 415
        other_private = await client.post(
            "/api/say", json={"person": "viewer", "chat_id": 2001, "text": "hi"}
        )
        assert other_private.status_code == 400
        state = (await client.get("/api/state")).json()
        assert all(chat["messages"] == [] for chat in state["chats"])
