"""OpenAI-compatible routes: models, embeddings, chat completions (with SSE streaming); thin over the core."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator

import numpy as np
from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from services.core.catalogue import describe
from services.core.chat import ChatTurn, Sampling
from services.errors import InvalidInput, RaydioError
from services.ingress.dependencies import CallerDep, CatalogueDep, ChatDep, ClientDep, ModelsDep
from services.ingress.errors import error_body
from services.ingress.schemas import (
    ERROR_RESPONSES,
    ChatChoice,
    ChatChoiceMessage,
    ChatCompletion,
    ChatCompletionRequest,
    CompletionUsage,
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    ModelCard,
    ModelList,
)

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES)

STARTED = int(time.time())


def _card(status, catalogue) -> ModelCard:
    entry = catalogue.get(status.name)
    return ModelCard(id=status.name, created=STARTED, root=status.info.get("model_id") or entry.identity,
                     ready=status.ready, kind=entry.kind, description=describe(entry))


@router.get("/models", response_model=ModelList)
async def list_models(client: ClientDep, catalogue: CatalogueDep) -> ModelList:
    """List the catalogue's models with their kind and readiness."""
    return ModelList(data=[_card(s, catalogue) for s in await client.statuses()])


@router.get("/models/{name}", response_model=ModelCard)
async def get_model(name: str, client: ClientDep, catalogue: CatalogueDep) -> ModelCard:
    """One model with its readiness."""
    catalogue.get(name)
    return _card(await client.status(name), catalogue)


@router.post("/embeddings", response_model=EmbeddingResponse)
async def create_embeddings(body: EmbeddingRequest, models: ModelsDep) -> EmbeddingResponse:
    """Embed one string or a list of strings with a sentence-embedding model."""
    texts = [body.input] if isinstance(body.input, str) else body.input
    result = await models.embed(body.model, texts)
    if body.dimensions is not None and body.dimensions != result.dimensions:
        raise InvalidInput(f"Got dimensions={body.dimensions}. Model {result.model!r} only produces {result.dimensions}.",
                           "dimensions")
    if body.encoding_format == "base64":
        vectors = [base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() for v in result.vectors]
    else:
        vectors = result.vectors
    tokens = sum(result.tokens)
    return EmbeddingResponse(
        data=[Embedding(index=i, embedding=v) for i, v in enumerate(vectors)],
        model=result.model,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={200: {"content": {"text/event-stream": {"description": "With `stream: true`: chat.completion.chunk events, then `data: [DONE]`."}}}},
)
async def create_chat_completion(body: ChatCompletionRequest, caller: CallerDep, chat: ChatDep):
    """Chat completion with a text-generation model; with `stream: true` the answer arrives as Server-Sent Events.

    With `tools` the model may answer with a tool call (`tool_calls`, finish_reason `tool_calls`); with
    `response_format` `json_object` / `json_schema` its answer is JSON that follows the schema. Both are enforced
    by constrained decoding. Tool results come back as `role: tool` messages with the call's `tool_call_id`."""
    body.refuse_unsupported()
    messages = [m.as_core() for m in body.messages]
    sampling = Sampling(max_tokens=body.max_completion_tokens or body.max_tokens,
                        temperature=body.temperature if "temperature" in body.model_fields_set else None,
                        top_p=body.top_p, stop=body.stop_list(), seed=body.seed)
    tools = [tool.model_dump(exclude_none=True) for tool in body.tools] if body.tools else None
    response_format = body.response_format.as_core() if body.response_format is not None else None
    # validation errors in the replica surface here, before any byte is sent
    turn = await chat.start(caller.key_id, messages, body.model, sampling, body.session_id, body.agent, tools=tools,
                            tool_choice=body.tool_choice or "auto", response_format=response_format)
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _sse(turn, completion_id, created, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    answer = await turn.answer()
    # A call cut by max_tokens (finish_reason "length") is returned as streamed: its arguments do not parse.
    calls = [{"id": c["id"], "function": {"name": c["name"], "arguments": c["arguments"]}} for c in turn.raw_tool_calls]
    message = ChatChoiceMessage(content=answer.text if not calls else (answer.text or None), tool_calls=calls or None)
    return ChatCompletion(
        id=completion_id, created=created, model=turn.model,
        choices=[ChatChoice(message=message, finish_reason=answer.finish_reason)],
        usage=CompletionUsage(prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens,
                              total_tokens=answer.prompt_tokens + answer.completion_tokens),
    )


async def _sse(turn: ChatTurn, completion_id: str, created: int, include_usage: bool) -> AsyncIterator[str]:
    def event(choices: list[dict], **extra) -> str:
        payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": turn.model,
                   "choices": choices, **extra}
        return f"data: {json.dumps(payload)}\n\n"

    yield event([{"index": 0, "delta": {"role": "assistant", "content": None if turn.guide.calls_tools else ""},
                  "finish_reason": None}])
    try:
        async for chunk in turn.chunks():
            if chunk["text"]:
                yield event([{"index": 0, "delta": {"content": chunk["text"]}, "finish_reason": None}])
            if chunk.get("tool_calls"):
                yield event([{"index": 0, "delta": {"tool_calls": chunk["tool_calls"]}, "finish_reason": None}])
            if chunk["finish_reason"]:
                yield event([{"index": 0, "delta": {}, "finish_reason": chunk["finish_reason"]}])
    except RaydioError as exc:  # headers are sent: report in-band, as OpenAI does
        yield f"data: {json.dumps(error_body(exc.message, 'server_error', exc.code))}\n\n"
    if include_usage:
        yield event([], usage={"prompt_tokens": turn.prompt_tokens, "completion_tokens": turn.completion_tokens,
                               "total_tokens": turn.prompt_tokens + turn.completion_tokens})
    yield "data: [DONE]\n\n"
