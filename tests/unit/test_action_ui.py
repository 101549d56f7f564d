"""The chat page's Accept and Reject: shown only while the stored session waits (also after a reload, which reads
the same stored session), and deciding through the same core as REST. Callbacks are called as Gradio would."""

from __future__ import annotations

import asyncio

import gradio as gr
import pytest
from starlette.requests import Request

from services.config import LimitsArgs, default_catalogue
from services.core.services import build_core
from services.ingress.auth import ANONYMOUS_LOCAL
from services.ingress.ui.chat import build_chat_ui
from services.storage.db import migrate

OWNER = ANONYMOUS_LOCAL.key_id


def _request() -> gr.Request:
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b"",
             "state": {"principal": ANONYMOUS_LOCAL}}
    return gr.Request(request=Request(scope))


def _fn(demo: gr.Blocks, name: str):
    return next(f.fn for f in demo.fns.values() if f.fn is not None and (f.api_name == name or f.fn.__name__ == name))


@pytest.fixture
def page(tmp_path):
    url = f"sqlite:///{tmp_path}/raydio.db"
    migrate(url)
    core = build_core(default_catalogue(), {}, url, LimitsArgs())
    return core, build_chat_ui(core)


def waiting(core) -> dict:
    async def setup():
        session = await core.sessions.create(OWNER)
        await core.actions.propose(OWNER, session["id"], "submit_job", {"kind": "embed", "inputs": ["a", "b"]}, "call_1", "clerk")
        return {"": session["id"]}

    return asyncio.run(setup())


def test_the_buttons_show_only_while_an_action_waits_and_accept_runs_it(page):
    core, demo = page
    saved = waiting(core)
    panel, text = asyncio.run(_fn(demo, "pending_view")(saved, _request()))
    assert panel["visible"] is True and "`submit_job`" in text and '"a"' in text and "clerk" in text
    heading, history = asyncio.run(_fn(demo, "restore")(saved, _request()))  # a reload shows the same session
    assert history == []
    chat, panel, text, reason = asyncio.run(_fn(demo, "accept_action")("", saved, _request()))
    assert panel["visible"] is False and chat[-1]["content"].startswith("⚙ Action submit_job accepted.")
    assert asyncio.run(_fn(demo, "pending_view")(saved, _request()))[0]["visible"] is False
    assert len(asyncio.run(core.jobs.list(OWNER))) == 1
    with pytest.raises(gr.Error, match="already accepted"):
        asyncio.run(_fn(demo, "accept_action")("", saved, _request()))


def test_reject_sends_the_reason(page):
    core, demo = page
    saved = waiting(core)
    chat, panel, _, _ = asyncio.run(_fn(demo, "reject_action")("Not now.", saved, _request()))
    assert chat[-1]["content"] == "⚙ Action submit_job rejected by the user. Reason: Not now." and panel["visible"] is False
    assert asyncio.run(core.jobs.list(OWNER)) == []
    assert asyncio.run(_fn(demo, "pending_view")({}, _request()))[0]["visible"] is False  # no session: nothing shows


def test_a_message_while_an_action_waits_points_at_the_buttons(page):
    core, demo = page
    saved = waiting(core)
    respond = _fn(demo, "chat")

    async def send():
        async for _ in respond("hello?", [], 16, 0.0, saved, None, _request()):
            pass

    with pytest.raises(gr.Error, match="Accept or Reject it below"):
        asyncio.run(send())
