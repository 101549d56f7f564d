"""The Gradio faces run through the same core as REST: its limits and validation apply to a UI user too.

The pages' callbacks are called directly (as Gradio would, with a request carrying the caller), so what is under
test is the callback over the core, not Gradio's transport (the integration tests drive that with gradio_client).
"""

from __future__ import annotations

import gradio as gr
import pytest
from starlette.requests import Request

from services.ingress.auth import ANONYMOUS_LOCAL
from services.ingress.ui.chat import build_chat_ui
from services.ingress.ui.jobs import build_jobs_ui


def _callback(demo: gr.Blocks, api_name: str):
    return next(f.fn for f in demo.fns.values() if f.api_name == api_name)


def _request() -> gr.Request:
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b"",
             "state": {"principal": ANONYMOUS_LOCAL}}
    return gr.Request(request=Request(scope))


async def test_the_jobs_page_refuses_what_rest_refuses(core):
    submit = _callback(build_jobs_ui(core), "submit")
    with pytest.raises(gr.Error, match="Input 0 has shape"):  # JobService's validation, as POST /v1/jobs answers it
        await submit("classify", "[[1, 2], [3, 4]]", _request())
    notice, _ = await submit("embed", "first text\nsecond text", _request())
    assert "with 2 inputs" in notice


async def test_the_chat_page_refuses_more_tokens_than_the_server_allows(core):
    respond = _callback(build_chat_ui(core), "chat")
    limit = core.limits.max_completion_tokens
    with pytest.raises(gr.Error, match=f"at most {limit} tokens"):  # ChatService's limit, as REST answers it
        async for _ in respond("Hi", [], limit + 1, 0.0, {}, None, _request()):
            pass


def test_the_load_tests_send_what_the_pages_take(core):
    """The Locust scenarios call the pages' APIs with positional data: a page that gains an input (the model
    dropdown did) must not leave them failing every call."""
    from loadtests import payloads
    from services.ingress.ui.embeddings import build_embeddings_ui

    for demo, api_name, data in ((build_embeddings_ui(core), "rank", payloads.ui_rank("q", ["a", "b"])),
                                 (build_chat_ui(core), "chat", payloads.ui_chat("hello"))):
        block = next(f for f in demo.fns.values() if f.api_name == api_name)
        api_inputs = [c for c in block.inputs if not isinstance(c, gr.State)]  # a State is not in the API
        assert len(api_inputs) == len(data), api_name
    assert {payloads.EMBEDDER, payloads.CHAT} <= set(core.catalogue.names)
