"""OpenAI-compatible routes: models, embeddings, chat completions (with SSE streaming)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from services.errors import InputTooLarge, InvalidInput, RaydioError
from services.ingress.backends import MODEL_DESCRIPTIONS, require_model
from services.ingress.dependencies import BackendsDep, LimitsDep, SessionsDep
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
EMBEDDING_DIMENSIONS = 384


def _card(status) -> ModelCard:
    return ModelCard(id=status.name, created=STARTED, root=status.info.get("model_id"), ready=status.ready,
                     description=MODEL_DESCRIPTIONS.get(status.name, ""))


@router.get("/models", response_model=ModelList)
async def list_models(backends: BackendsDep) -> ModelList:
    """List the models with their readiness."""
    return ModelList(data=[_card(s) for s in await backends.statuses()])


@router.get("/models/{name}", response_model=ModelCard)
async def get_model(name: str, backends: BackendsDep) -> ModelCard:
    """One model with its readiness."""
    return _card(await backends.status(name))


@router.post("/embeddings", response_model=EmbeddingResponse)
async def create_embeddings(body: EmbeddingRequest, backends: BackendsDep) -> EmbeddingResponse:
    """Embed one string or a list of strings; vectors are L2-normalised."""
    require_model(body.model, "embedder")
    if body.dimensions is not None and body.dimensions != EMBEDDING_DIMENSIONS:
        raise InvalidInput(f"Got dimensions={body.dimensions}. The embedder only produces {EMBEDDING_DIMENSIONS}.",
                           "dimensions")
    texts = [body.input] if isinstance(body.input, str) else body.input
    result = await backends.embed(texts)
    if body.encoding_format == "base64":
        vectors = [base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() for v in result["vectors"]]
    else:
        vectors = result["vectors"]
    tokens = sum(result["tokens"])
    return EmbeddingResponse(
        data=[Embedding(index=i, embedding=v) for i, v in enumerate(vectors)],
        model=body.model,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )


def _generation_params(body: ChatCompletionRequest, max_completion_tokens: int, agent_defaults: dict) -> dict:
    requested = body.max_completion_tokens or body.max_tokens or agent_defaults.get("max_tokens")
    if requested is not None and requested > max_completion_tokens:
        raise InputTooLarge(
            f"Got max_tokens={requested}. This server generates at most {max_completion_tokens} tokens per request.",
            "max_tokens",
        )
    return {
        "max_tokens": min(requested or 256, max_completion_tokens),
        "temperature": body.temperature if "temperature" in body.model_fields_set else agent_defaults.get("temperature", body.temperature),
        "top_p": body.top_p,
        "stop": body.stop_list(),
        "seed": body.seed,
    }


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={200: {"content": {"text/event-stream": {"description": "With `stream: true`: chat.completion.chunk events, then `data: [DONE]`."}}}},
)
async def create_chat_completion(body: ChatCompletionRequest, request: Request, backends: BackendsDep,
                                 limits: LimitsDep, sessions: SessionsDep):
    """Chat completion; with `stream: true` the answer arrives as Server-Sent Events."""
    require_model(body.model, "chat")
    if len(body.messages) > limits.max_messages:
        raise InputTooLarge(f"Got {len(body.messages)} messages. At most {limits.max_messages} are allowed.", "messages")
    new = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    owner = request.state.principal.key_id
    conversation = await sessions.conversation(owner, body.session_id, new, body.agent)
    params = _generation_params(body, limits.max_completion_tokens, conversation.agent_defaults)
    stream = backends.chat(conversation.messages, params)
    first = await stream.__anext__()  # validation errors in the replica surface here, before any byte is sent
    prompt_tokens = first["prompt_tokens"]

    async def remember(answer: str, completion_tokens: int) -> None:
        if body.session_id is not None:
            await sessions.append(owner, body.session_id, [*new, {"role": "assistant", "content": answer}],
                                  [*first["message_tokens"][conversation.new_from:], completion_tokens])

    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _sse(stream, completion_id, created, body.model, prompt_tokens, include_usage, remember),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    text, finish_reason, completion_tokens = [], None, 0
    async for chunk in stream:
        text.append(chunk["text"])
        finish_reason = chunk["finish_reason"] or finish_reason
        completion_tokens = chunk["completion_tokens"] or completion_tokens
    await remember("".join(text), completion_tokens)
    return ChatCompletion(
        id=completion_id, created=created, model=body.model,
        choices=[ChatChoice(message=ChatChoiceMessage(content="".join(text)), finish_reason=finish_reason)],
        usage=CompletionUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                              total_tokens=prompt_tokens + completion_tokens),
    )


async def _sse(stream: AsyncIterator[dict], completion_id: str, created: int, model: str, prompt_tokens: int,
               include_usage: bool, on_done: Callable[[str, int], Awaitable[None]]) -> AsyncIterator[str]:
    def event(choices: list[dict], **extra) -> str:
        payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": choices, **extra}
        return f"data: {json.dumps(payload)}\n\n"

    yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    completion_tokens, answer = 0, []
    try:
        async for chunk in stream:
            completion_tokens = chunk["completion_tokens"] or completion_tokens
            answer.append(chunk["text"])
            if chunk["text"]:
                yield event([{"index": 0, "delta": {"content": chunk["text"]}, "finish_reason": None}])
            if chunk["finish_reason"]:
                yield event([{"index": 0, "delta": {}, "finish_reason": chunk["finish_reason"]}])
    except RaydioError as exc:  # headers are sent: report in-band, as OpenAI does
        yield f"data: {json.dumps(error_body(exc.message, 'server_error', exc.code))}\n\n"
    else:
        await on_done("".join(answer), completion_tokens)
    if include_usage:
        yield event([], usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                               "total_tokens": prompt_tokens + completion_tokens})
    yield "data: [DONE]\n\n"
