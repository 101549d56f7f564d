"""The official clients, unmodified, against the running stack: openai, gradio_client, tritonclient and mcp."""

from __future__ import annotations

import json

import httpx
import numpy as np
import openai
import pytest
from gradio_client import Client, handle_file

from tests.conftest import digit_png


@pytest.fixture(scope="module")
def oai(base_url, admin_key):
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=admin_key, max_retries=0, timeout=60)


def test_openai_embeddings(oai):
    result = oai.embeddings.create(model="embedder", input=["hello world", "a cat sits on the mat"])  # base64 on the wire
    vectors = np.array([d.embedding for d in result.data])
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    floats = oai.embeddings.create(model="embedder", input="hello world", encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, vectors[0], atol=1e-5)
    assert result.usage.prompt_tokens == 4 + 8


def test_openai_chat(oai):
    completion = oai.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=12, temperature=0,
        n=1, user="test-user",
    )
    assert "Paris" in completion.choices[0].message.content
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_openai_streaming_chat(oai):
    stream = oai.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "Name three fruits."}], max_tokens=20, temperature=0,
        stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3
    assert chunks[-1].usage.completion_tokens <= 20


def test_openai_errors_are_typed(oai):
    with pytest.raises(openai.BadRequestError, match="at most 512"):
        oai.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=100_000)
    with pytest.raises(openai.NotFoundError, match="Models for embeddings: embedder"):
        oai.embeddings.create(model="text-embedding-3-small", input="x")


def test_openai_client_extras(oai):
    # what the openai client sends when asked for plain, repeatable text
    request = dict(model="chat", messages=[{"role": "user", "content": "Say a word."}], max_completion_tokens=6,
                   temperature=1.2, seed=5, presence_penalty=0, frequency_penalty=0, response_format={"type": "text"},
                   stop=["\n\n"], user="u-1", n=1, logprobs=False)
    first, second = (oai.chat.completions.create(**request) for _ in range(2))
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.usage.completion_tokens <= 6
    # tools and structured output through the real stack (the 135M model, constrained by its grammar)
    tool = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    called = oai.chat.completions.create(model="chat", messages=ask, tools=[tool], tool_choice="required",
                                         max_completion_tokens=48, temperature=0)
    assert called.choices[0].finish_reason == "tool_calls"
    call = called.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments)["city"], str)
    with pytest.raises(openai.BadRequestError, match="tool_choice") as refused:
        oai.chat.completions.create(model="chat", messages=ask, tools=[tool],
                                    tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert refused.value.param == "tool_choice"


@pytest.mark.parametrize(("ui", "endpoints"), [("chat", ["/chat"]), ("digits", ["/classify"]), ("embeddings", ["/rank"]),
                                               ("jobs", ["/submit", "/list_jobs"])])
def test_gradio_view_api_names_and_describes_endpoints_and_hides_helpers(base_url, auth_headers, ui, endpoints):
    api = Client(f"{base_url}/ui/{ui}/", verbose=False, headers=auth_headers).view_api(print_info=False, return_format="dict")
    assert list(api["named_endpoints"]) == endpoints  # ChatInterface's helpers and the load events are hidden
    assert not api["unnamed_endpoints"]
    for info in api["named_endpoints"].values():
        assert len(info["description"]) > 30
        assert all(p["label"] for p in info["parameters"]) and all(r["label"] for r in info["returns"])


def test_openai_client_without_a_valid_key_is_refused(base_url):
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="rdk_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="not valid"):
        client.models.list()


def test_gradio_chat_ui(base_url, auth_headers):
    client = Client(f"{base_url}/ui/chat/", verbose=False, headers=auth_headers)
    assert "/chat" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    answer, saved = client.predict("What is the capital of France?", 16, 0.0, {}, api_name="/chat")
    assert "Paris" in answer
    # the browser's session map comes back; sending it again continues the same stored session
    again, saved_again = client.predict("And of Italy?", 16, 0.0, saved, api_name="/chat")
    assert saved_again == saved and again
    session = httpx.get(f"{base_url}/v1/sessions/{saved['']}", headers=auth_headers).json()
    assert [m["role"] for m in session["messages"]] == ["user", "assistant", "user", "assistant"]
    assert session["messages"][1]["content"] == answer and session["messages"][3]["content"] == again


def test_gradio_digits_ui(base_url, auth_headers, sklearn_digits, tmp_path):
    path = tmp_path / "digit.png"
    path.write_bytes(digit_png(sklearn_digits.images[7], size=280))
    client = Client(f"{base_url}/ui/digits/", verbose=False, headers=auth_headers)
    label, grid = client.predict({"background": None, "layers": [], "composite": handle_file(str(path))},
                                 api_name="/classify")
    assert label["label"] == str(sklearn_digits.target[7])
    assert np.asarray(grid["data"]).shape == (8, 8)


def test_gradio_embeddings_ui(base_url, auth_headers):
    client = Client(f"{base_url}/ui/embeddings/", verbose=False, headers=auth_headers)
    table = client.predict("Someone is making music.",
                           "Cats sleep in the sun.\nA man is playing a guitar.\nThe market fell.", api_name="/rank")
    assert table["data"][0][1] == "A man is playing a guitar."
    assert table["data"][0][0] > table["data"][-1][0]


def test_gradio_client_without_credentials_is_refused(base_url):
    with pytest.raises(ValueError, match="credentials were not provided"):
        Client(f"{base_url}/ui/chat/", verbose=False)


def test_an_agent_created_at_runtime_answers_through_rest_and_its_ui(http, base_url, auth_headers):
    created = http.post("/v1/agents", json={"name": "echo-bot", "system_prompt": "Always answer with the word banana.",
                                            "temperature": 0, "max_tokens": 12})
    assert created.status_code == 201
    page = http.get(created.json()["ui_url"], headers={"Accept": "text/html"})
    assert page.status_code == 200  # the UI is there at once, no restart
    ui = Client(f"{base_url}/ui/chat/", verbose=False, headers={**auth_headers, "X-Raydio-Agent": "echo-bot"})
    answer, saved = ui.predict("Hello!", 12, 0.0, {}, api_name="/chat")
    assert answer and "echo-bot" in saved
    session = http.get(f"/v1/sessions/{saved['echo-bot']}").json()
    assert session["agent"] == "echo-bot"
