"""The hand-written page in a real headless Chromium (Debian's), driven by Playwright: log in, chat, draw, compare, watch."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect, sync_playwright

CHROMIUM = os.environ.get("RAYDIO_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
pytestmark = pytest.mark.requires_chromium

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def open_page(base_url: str, timeout_ms: int) -> Iterator[Page]:
    """A page of Debian's Chromium on ``base_url``; ``timeout_ms`` bounds every wait and expectation."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium (`make test` does, as root).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(timeout_ms)
        expect.set_options(timeout=timeout_ms)
        try:
            yield page
        finally:
            context.close()
            browser.close()


@pytest.fixture(scope="module")
def page(base_url):
    with open_page(base_url, 60_000) as page:  # model answers on a shared 2-core machine take seconds
        yield page


def test_log_in_and_chat_with_a_streamed_answer(page, admin_key):
    page.goto("/app")
    assert "/login" in page.url  # not logged in yet: the page sends us to the login form
    page.fill("#api_key", admin_key)
    page.click("button[type=submit]")
    page.wait_for_url("**/app")
    page.fill("#chat-input", "Write two sentences about the sea.")
    page.click("#chat-send")
    answer = page.locator("#chat-log li.assistant").last
    # streamed: the bubble shows part of the answer before the answer is complete
    page.wait_for_function("""() => { const li = [...document.querySelectorAll('#chat-log li.assistant')].pop();
                                     return li && li.textContent.length > 0 && li.dataset.done !== 'true'; }""")
    partial = answer.text_content()
    expect(answer).to_have_attribute("data-done", "true")
    final = answer.text_content()
    assert final.startswith(partial) and len(final) > len(partial)


def test_draw_a_digit(page):
    box = page.locator("#pad").bounding_box()
    x, top, bottom = box["x"] + box["width"] / 2, box["y"] + 30, box["y"] + box["height"] - 30
    page.mouse.move(x, top)
    page.mouse.down()
    for i in range(1, 21):  # a vertical stroke: a one
        page.mouse.move(x, top + (bottom - top) * i / 20)
    page.mouse.up()
    page.click("#digit-classify")
    expect(page.locator("#digit-result")).to_contain_text("It looks like a 1")
    expect(page.locator("#digit-bars div")).to_have_count(10)


def test_compare_sentences_and_watch_a_job(page):
    page.click("#compare-go")
    expect(page.locator("#compare-result")).to_contain_text("Cosine similarity 0.")
    page.click("#job-submit")
    expect(page.locator("#job-status")).to_contain_text("succeeded, 3/3")
    assert page.locator("#job-progress").get_attribute("max") == "3"
    page.screenshot(path=str(os.environ.get("RAYDIO_SCREENSHOT", "/tmp/raydio-app.png")), full_page=True)


def test_gradio_chat_ui_shows_its_history_after_a_reload(page):
    page.goto("/ui/chat/")  # the session cookie from the login above covers Gradio too
    box = page.locator("textarea").first
    box.fill("Remember the word marmalade.")
    box.press("Enter")

    def stored_turn() -> bool:  # the answer is appended to the stored session when it is complete
        sessions = page.request.get("/v1/sessions").json()
        return any(s["title"].startswith("Remember the word marmalade") and
                   len(page.request.get(f"/v1/sessions/{s['id']}").json()["messages"]) == 2 for s in sessions)

    for _ in range(120):
        if stored_turn():
            break
        page.wait_for_timeout(500)
    else:
        raise AssertionError("the chat UI did not store the turn")
    page.reload()
    # the history comes back from the stored session, not from the page's memory
    expect(page.get_by_text("Remember the word marmalade.").first).to_be_visible()
    assert page.locator("textarea").first.input_value() == ""
