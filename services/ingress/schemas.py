"""Request and response bodies. OpenAI-shaped where a client already speaks that API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    message: str = Field(description="What was wrong, in words a client can show.")
    type: str = Field(description="Error class: invalid_request_error, service_unavailable, timeout, server_error.")
    param: str | None = Field(None, description="The request field at fault, when there is one.")
    code: str | None = Field(None, description="Machine-readable code, e.g. input_too_large, model_not_found.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid input: wrong types, empty or too large."},
    404: {"model": ErrorResponse, "description": "Unknown model."},
    413: {"model": ErrorResponse, "description": "Request body larger than the configured limit."},
    503: {"model": ErrorResponse, "description": "Model at capacity or its replica failed; see Retry-After."},
    504: {"model": ErrorResponse, "description": "The model did not answer in time."},
}


# --- models -------------------------------------------------------------------------------------

class ModelCard(BaseModel):
    id: str = Field(description="Short name used in requests.", examples=["embedder"])
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time the service started.")
    owned_by: str = "raydio"
    root: str | None = Field(None, description="The underlying model.", examples=["sentence-transformers/all-MiniLM-L6-v2"])
    ready: bool = Field(description="Whether the model's deployment answered just now.")
    description: str = ""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- embeddings ---------------------------------------------------------------------------------

class EmbeddingRequest(Strict):
    model: str = Field("embedder", description="Model name.", examples=["embedder"])
    input: str | list[str] = Field(description="One string or a list of strings to embed.",
                                   examples=["A cat sits on the mat.", ["first sentence", "second sentence"]])
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="`float` lists, or `base64` of little-endian float32 (what the openai client asks for)."
    )
    dimensions: int | None = Field(None, description="Must equal the model's dimensions (384) when given.")
    user: str | None = Field(None, description="End-user id, accepted for compatibility and not stored.")

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        items = [value] if isinstance(value, str) else value
        if not items:
            raise ValueError("must contain at least one string")
        for i, item in enumerate(items):
            if not item.strip():
                raise ValueError(f"item {i} is empty; every input must contain text")
        return value

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"model": "embedder", "input": ["The cat sat on the mat.", "A kitten rests on a rug."]}]
    })


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# --- chat ---------------------------------------------------------------------------------------

class TextPart(Strict):
    type: Literal["text"]
    text: str


class ChatMessage(Strict):
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart] = Field(description="Text, or a list of text parts.")
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class StreamOptions(Strict):
    include_usage: bool = Field(False, description="Send a last chunk with token usage before [DONE].")


class ChatCompletionRequest(Strict):
    model: str = Field("chat", examples=["chat"])
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far; the last one is usually the user's.")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate (bounded by the server's limit).")
    max_completion_tokens: int | None = Field(None, ge=1, description="Newer name for max_tokens; either may be sent.")
    temperature: float = Field(0.7, ge=0, le=2, description="0 is greedy; higher is more random.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling: keep the smallest set of tokens with this mass.")
    stream: bool = Field(False, description="Stream Server-Sent Events, one chunk per step, ending with `data: [DONE]`.")
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=1, description="Only 1 is supported.")] = 1
    stop: str | list[str] | None = Field(None, description="Up to 4 strings that end generation (not included).")
    seed: int | None = Field(None, description="Makes sampling repeatable.")
    user: str | None = Field(None, description="End-user id, accepted for compatibility and not stored.")
    session_id: str | None = Field(
        None, description="raydio extension: continue this stored chat session (its history is prepended) and "
        "append this turn and the answer to it. With the openai client: extra_body={'session_id': ...}.")
    agent: str | None = Field(None, description="raydio extension: answer as this agent (its system prompt and "
                              "generation settings apply unless the request sets them).")

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop strings are allowed")
        if any(not s for s in stops):
            raise ValueError("stop strings must not be empty")
        return value

    def stop_list(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"model": "chat", "messages": [{"role": "user", "content": "What is the capital of France?"}],
                      "max_tokens": 32, "temperature": 0}]
    })


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatChoiceMessage
    finish_reason: Literal["stop", "length"] | None


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage


# --- digits -------------------------------------------------------------------------------------

Grid = list[list[float]]


class DigitsRequest(Strict):
    pixels: list[Grid] | Grid | list[float] = Field(
        description="One 8x8 grid, a flat list of 64 values, or a list of 8x8 grids. Values are ink "
        "intensities from 0 (background) to 16 (full ink), the scale of scikit-learn's digits.",
    )
    model: str = Field("digits", examples=["digits"])

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"pixels": [
        [0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0], [0, 3, 15, 2, 0, 11, 8, 0],
        [0, 4, 12, 0, 0, 8, 8, 0], [0, 5, 8, 0, 0, 9, 8, 0], [0, 4, 11, 0, 1, 12, 7, 0],
        [0, 2, 14, 5, 10, 12, 0, 0], [0, 0, 6, 13, 10, 0, 0, 0]]}]})


class DigitPrediction(BaseModel):
    label: int = Field(description="The most likely digit.")
    probabilities: list[float] = Field(description="Probability of each digit 0..9.")
    pixels: Grid | None = Field(None, description="For uploaded images: the 8x8 grid the model saw.")


class DigitsResponse(BaseModel):
    model: str = "digits"
    predictions: list[DigitPrediction]


# --- chat sessions ------------------------------------------------------------------------------

class SessionCreate(Strict):
    title: str = Field("", max_length=200, description="Shown in lists; defaults to the first user message.")
    agent: str | None = Field(None, description="Bind the session to an agent: its system prompt applies to every turn.")


class StoredMessage(BaseModel):
    role: str
    content: str
    tokens: int = Field(description="Tokens of this message, counted by the chat model's tokenizer.")
    created_at: str


class SessionInfo(BaseModel):
    id: str
    object: Literal["chat.session"] = "chat.session"
    title: str
    agent: str | None
    created_at: str
    updated_at: str


class SessionDetail(SessionInfo):
    messages: list[StoredMessage]


# --- durable jobs -------------------------------------------------------------------------------

NonEmptyText = Annotated[str, Field(min_length=1, max_length=20_000)]
PixelGrid = Annotated[list[Annotated[list[Annotated[float, Field(ge=0, le=16)]], Field(min_length=8, max_length=8)]],
                      Field(min_length=8, max_length=8)]


class EmbedJob(Strict):
    kind: Literal["embed"]
    inputs: list[NonEmptyText] = Field(min_length=1, description="Texts to embed; results are 384-d vectors.")


class ClassifyJob(Strict):
    kind: Literal["classify"]
    inputs: list[PixelGrid] = Field(min_length=1, description="8x8 grids of ink 0..16; results are labels and probabilities.")


class CompleteJob(Strict):
    kind: Literal["complete"]
    inputs: list[NonEmptyText] = Field(min_length=1, description="Prompts, each answered as a one-turn chat.")
    max_tokens: int = Field(64, ge=1, description="Tokens per answer (bounded by the server's limit).")
    temperature: float = Field(0.7, ge=0, le=2)


JobCreate = Annotated[EmbedJob | ClassifyJob | CompleteJob, Field(discriminator="kind")]


class JobProgress(BaseModel):
    done: int
    total: int


class JobInfo(BaseModel):
    id: str
    object: Literal["job"] = "job"
    kind: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: JobProgress
    error: str | None
    attempts: int = Field(description="How many times a runner claimed it (more than 1 after a runner died).")
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    results: list[Any] | None = Field(description="One output per input, in order, once the job succeeded.")
