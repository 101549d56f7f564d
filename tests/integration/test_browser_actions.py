"""Confirmed actions in a real headless Chromium: an agent whose action is submit_job proposes it; the /app page and
the Gradio chat page show Accept and Reject only while it waits, also after a reload; Accept creates one job."""

from __future__ import annotations

import itertools
import os
import re

import pytest
from playwright.sync_api import expect

from tests.integration.test_browser import open_page

pytestmark = pytest.mark.requires_chromium
ASK = "Embed these three sentences: The sky is blue. Cats purr loudly. Rain falls in April."
_names = itertools.count()


@pytest.fixture(scope="module")
def page(base_url, admin_key):
    # the answer is a constrained call of ~100 tokens on shared CPUs
    with open_page(base_url, 120_000) as page:
        page.goto("/app")
        page.fill("#api_key", admin_key)
        page.click("button[type=submit]")
        page.wait_for_url("**/app")
        yield page


def clerk(page) -> str:
    name = f"clerk-{os.getpid()}-{next(_names)}"
    created = page.request.post("/v1/agents", data={
        "name": name, "system_prompt": "You are a clerk. To embed texts, call submit_job with kind embed and the texts "
        "as inputs.", "temperature": 0, "max_tokens": 160, "actions": ["submit_job"], "tool_choice": "required"})
    assert created.status == 201, created.text()
    return name


def job_ids(page) -> set[str]:
    return {job["id"] for job in page.request.get("/v1/jobs").json()}


def test_app_page_accept_after_a_reload(page):
    name = clerk(page)
    page.fill("#chat-agent", name)
    page.dispatch_event("#chat-agent", "change")
    expect(page.locator("#pending")).to_be_hidden()
    before = job_ids(page)
    page.fill("#chat-input", ASK)
    page.click("#chat-send")
    expect(page.locator("#pending")).to_be_visible()
    expect(page.locator("#pending-text")).to_contain_text("submit_job")
    assert job_ids(page) == before  # nothing runs before accept
    page.reload()
    expect(page.locator("#chat-agent")).to_have_value(name)
    expect(page.locator("#pending")).to_be_visible()  # derived from the stored session
    page.click("#accept-action")
    expect(page.locator("#pending")).to_be_hidden()
    expect(page.locator("#chat-log li").last).to_contain_text("Action submit_job accepted")
    assert len(job_ids(page) - before) == 1
    page.reload()
    expect(page.locator("#pending")).to_be_hidden()


def test_app_page_reject_with_a_reason(page):
    name = clerk(page)
    page.fill("#chat-agent", name)
    page.dispatch_event("#chat-agent", "change")
    before = job_ids(page)
    page.fill("#chat-input", ASK)
    page.click("#chat-send")
    expect(page.locator("#pending")).to_be_visible()
    page.fill("#reject-reason", "Not today.")
    page.click("#reject-action")
    expect(page.locator("#pending")).to_be_hidden()
    expect(page.locator("#chat-log li").last).to_contain_text("rejected by the user. Reason: Not today.")
    assert job_ids(page) == before


def test_gradio_chat_page_accept_after_a_reload(page):
    name = clerk(page)
    page.goto(f"/ui/chat/?agent={name}")
    accept = page.locator("#accept-action")
    expect(accept).to_be_hidden()
    before = job_ids(page)
    # The page sends its sliders' values, not the agent's: greedy, and room for the whole call (cut by max_tokens,
    # a call does not parse and nothing is proposed).
    for label, value in (("Temperature", "0"), ("Max new tokens", "256")):
        field = page.get_by_label(f"number input for {label}")
        field.fill(value)
        field.press("Enter")
    box = page.locator("textarea").first
    box.fill(ASK)
    box.press("Enter")
    expect(accept).to_be_visible()
    expect(page.locator("#pending-text")).to_contain_text("submit_job")
    assert job_ids(page) == before
    page.reload()
    expect(page.locator("#accept-action")).to_be_visible()  # the stored session decides, not the page's memory
    page.locator("#accept-action").click()
    expect(page.locator("#accept-action")).to_be_hidden()
    expect(page.get_by_text(re.compile("Action submit_job accepted")).first).to_be_visible()
    assert len(job_ids(page) - before) == 1
