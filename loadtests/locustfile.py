"""raydio's Locust scenarios. Each user authenticates like a real client (Authorization: Bearer <API key>)
and sends an X-Request-ID with every request. `make loadtest` runs them headless with the shape named by
LOADTEST_SHAPE (warmup, steps, spike); `locust -f loadtests/locustfile.py --host URL` opens the web UI.

Derived measurements are Locust events of their own: "chat stream TTFT" (time to the first token, ms),
"chat stream tokens/s" (its "response time" column holds tokens per second, not milliseconds) and
"job embed (submit to done)" (a batch job from POST to its final status).
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid

from locust import HttpUser, LoadTestShape, between, events, task

from loadtests import payloads, shapes

SENTENCES = [
    "A man is playing a guitar on stage.",
    "The stock market fell sharply today.",
    "Someone performs music with a string instrument.",
    "Cats like to sleep in the sun.",
    "Heavy rain is expected across the north tomorrow.",
    "She finished the marathon in under three hours.",
]
# Two 8x8 digits from scikit-learn's data set (ink 0-16): a zero and a one.
DIGITS = [
    [[0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0], [0, 3, 15, 2, 0, 11, 8, 0], [0, 4, 12, 0, 0, 8, 8, 0],
     [0, 5, 8, 0, 0, 9, 8, 0], [0, 4, 11, 0, 1, 12, 7, 0], [0, 2, 14, 5, 10, 12, 0, 0], [0, 0, 6, 13, 10, 0, 0, 0]],
    [[0, 0, 0, 12, 13, 5, 0, 0], [0, 0, 0, 11, 16, 9, 0, 0], [0, 0, 3, 15, 16, 6, 0, 0], [0, 7, 15, 16, 16, 2, 0, 0],
     [0, 0, 1, 16, 16, 3, 0, 0], [0, 0, 1, 16, 16, 6, 0, 0], [0, 0, 1, 16, 16, 6, 0, 0], [0, 0, 0, 11, 16, 10, 0, 0]],
]
PROMPTS = ["Tell me about the sea.", "Name three colours.", "What is a cat?", "Say hello politely."]
JOB_TIMEOUT_S = 120.0


class RaydioUser(HttpUser):
    abstract = True
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        key = os.environ.get("RAYDIO_API_KEY")
        if not key:
            raise RuntimeError("RAYDIO_API_KEY is not set; `make loadtest` creates one when it is missing.")
        self.client.headers["Authorization"] = f"Bearer {key}"

    @staticmethod
    def ids() -> dict[str, str]:
        return {"X-Request-ID": uuid.uuid4().hex}

    def metric(self, name: str, value: float, kind: str = "METRIC", exception: Exception | None = None) -> None:
        events.request.fire(request_type=kind, name=name, response_time=value, response_length=0,
                            exception=exception, context={})


class EmbeddingsUser(RaydioUser):
    weight = 4

    @task
    def embed(self) -> None:
        body = {"model": "embedder", "input": random.sample(SENTENCES, random.randint(1, 4))}
        self.client.post("/v1/embeddings", json=body, headers=self.ids(), name="embeddings")


class DigitsUser(RaydioUser):
    weight = 3

    @task
    def classify(self) -> None:
        self.client.post("/v1/digits/classify", json={"pixels": random.choice(DIGITS)}, headers=self.ids(), name="digits")


class ChatUser(RaydioUser):
    weight = 1
    wait_time = between(1, 3)

    @task
    def complete(self) -> None:
        body = {"model": "chat", "messages": [{"role": "user", "content": random.choice(PROMPTS)}],
                "max_tokens": 16, "temperature": 0}
        self.client.post("/v1/chat/completions", json=body, headers=self.ids(), name="chat")


class ChatStreamUser(RaydioUser):
    weight = 1
    wait_time = between(1, 3)

    @task
    def stream(self) -> None:
        body = {"model": "chat", "messages": [{"role": "user", "content": random.choice(PROMPTS)}], "max_tokens": 24,
                "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
        started = time.perf_counter()
        first = None
        tokens = 0
        with self.client.post("/v1/chat/completions", json=body, headers=self.ids(), name="chat stream", stream=True,
                              catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            done = False
            for line in response.iter_lines():
                if not line.startswith(b"data: "):
                    continue
                data = line[6:]
                if data == b"[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    response.failure(f"in-band error: {chunk['error']}")
                    return
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                if first is None and any(c["delta"].get("content") for c in chunk.get("choices", [])):
                    first = time.perf_counter()
            ended = time.perf_counter()
            if not done or first is None:
                response.failure("the stream ended without a token or without [DONE]")
                return
            response.success()
        self.metric("chat stream TTFT", (first - started) * 1000, "SSE")
        if tokens > 1 and ended > first:
            self.metric("chat stream tokens/s", (tokens - 1) / (ended - first), "RATE")


class GradioUser(RaydioUser):
    """A page used through Gradio's HTTP API: POST .../call/<api>, then read its event stream to the end."""

    abstract = True

    def gradio_call(self, prefix: str, data: list, name: str) -> tuple[str | None, float | None]:
        """(the last event, when the first "generating" event came) of one call; Locust records both requests."""
        response = self.client.post(prefix, json={"data": data}, headers=self.ids(), name=f"{name}: call")
        if response.status_code != 200:
            return None, None
        event, first = None, None
        with self.client.get(f"{prefix}/{response.json()['event_id']}", headers=self.ids(), name=f"{name}: events",
                             stream=True, catch_response=True) as events_response:
            for line in events_response.iter_lines():
                if line.startswith(b"event:"):
                    event = line[6:].strip().decode()
                    if event == "generating" and first is None:
                        first = time.perf_counter()
                    if event in ("complete", "error"):
                        break
            if event == "complete":
                events_response.success()
            else:
                events_response.failure(f"the event stream ended with {event!r}")
        return event, first


class GradioUIUser(GradioUser):
    """The embeddings UI: rank sentences against a query."""

    weight = 1

    @task
    def rank(self) -> None:
        started = time.perf_counter()
        query, *others = random.sample(SENTENCES, 4)
        event, _ = self.gradio_call("/ui/embeddings/gradio_api/call/rank", payloads.ui_rank(query, others),
                                    "ui embeddings rank")
        self.metric("ui embeddings rank", (time.perf_counter() - started) * 1000, "GRADIO",
                    None if event == "complete" else RuntimeError(f"ended with {event!r}"))


class GradioChatUser(GradioUser):
    """A person on the chat page; the page runs as many generations at once as the chat deployment batches."""

    weight = 1
    wait_time = between(1, 3)

    @task
    def chat(self) -> None:
        started = time.perf_counter()
        event, first = self.gradio_call("/ui/chat/gradio_api/call/chat", payloads.ui_chat(random.choice(PROMPTS)), "ui chat")
        if first is not None:
            self.metric("ui chat first tokens", (first - started) * 1000, "GRADIO")
        self.metric("ui chat", (time.perf_counter() - started) * 1000, "GRADIO",
                    None if event == "complete" else RuntimeError(f"ended with {event!r}"))


class JobsUser(RaydioUser):
    """A durable batch job: POST /v1/jobs, then poll GET /v1/jobs/{id} until it is done."""

    weight = 1
    wait_time = between(2, 5)

    @task
    def embed_job(self) -> None:
        started = time.perf_counter()
        response = self.client.post("/v1/jobs", json={"kind": "embed", "inputs": random.sample(SENTENCES, 6) * 4},
                                    headers=self.ids(), name="job submit")
        if response.status_code != 202:
            return
        job_id = response.json()["id"]
        status = "queued"
        while status in ("queued", "running") and time.perf_counter() - started < JOB_TIMEOUT_S:
            time.sleep(0.5)
            poll = self.client.get(f"/v1/jobs/{job_id}", headers=self.ids(), name="job status")
            if poll.status_code == 200:
                status = poll.json()["status"]
        error = None if status == "succeeded" else RuntimeError(f"job {job_id} ended as {status}")
        self.metric("job embed (submit to done)", (time.perf_counter() - started) * 1000, "JOB", error)


class SelectedShape(LoadTestShape):
    """The stages named by LOADTEST_SHAPE (loadtests/shapes.py)."""

    shape = shapes.selected()
    scale = shapes.time_scale()

    def tick(self) -> tuple[int, float] | None:
        return shapes.stage_at(self.shape, self.get_run_time(), self.scale)
