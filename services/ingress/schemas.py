"""Request and response bodies. OpenAI-shaped where a client already speaks that API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from services.errors import InvalidInput


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
SERVER_ERROR: dict[int | str, dict[str, Any]] = {
    500: {"model": ErrorResponse, "description": "Unexpected failure. It is logged; the body reveals nothing internal."},
}
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing, invalid, expired or revoked credentials."},
    403: {"model": ErrorResponse, "description": "The key lacks the scope this route needs."},
    429: {"model": ErrorResponse, "description": "The key's rate limit is exhausted; see Retry-After."},
}
ERROR_RESPONSES.update({**AUTH_ERRORS, **SERVER_ERROR})


# --- health -------------------------------------------------------------------------------------

class Liveness(BaseModel):
    status: Literal["live"] = "live"


class ModelHealth(BaseModel):
    ready: bool
    error: str | None = Field(None, description="Why the model did not answer, when it did not.")


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    models: dict[str, ModelHealth]


# --- models -------------------------------------------------------------------------------------

class ModelCard(BaseModel):
    id: str = Field(description="Short name used in requests.", examples=["embedder"])
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time the service started.")
    owned_by: str = "raydio"
    root: str | None = Field(None, description="The underlying model.", examples=["sentence-transformers/all-MiniLM-L6-v2"])
    ready: bool = Field(description="Whether the model's deployment answered just now.")
    kind: str = Field(description="sentence-embedding, text-generation or torchscript.")
    description: str = ""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- embeddings ---------------------------------------------------------------------------------

class EmbeddingRequest(Strict):
    model: str | None = Field(None, description="A sentence-embedding model of the catalogue; default: the first one.",
                              examples=["embedder"])
    input: str | list[str] = Field(description="One string or a list of strings to embed.",
                                   examples=["A cat sits on the mat.", ["first sentence", "second sentence"]])
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="`float` lists, or `base64` of little-endian float32 (what the openai client asks for)."
    )
    dimensions: int | None = Field(None, description="Must equal the model's dimensions (384 for embedder) when given.")
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


class FunctionCall(BaseModel):
    name: str = Field(description="The called tool's name.")
    arguments: str = Field(description="The arguments, as a JSON object in a string.")


class MessageToolCall(BaseModel):
    id: str = Field(description="`call_<hex>`; a `tool` message answers it by `tool_call_id`.")
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Strict):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart] | None = Field(
        None, description="Text, or a list of text parts. May be null only on an assistant message with tool_calls.")
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = Field(
        None, description="On an assistant message: the tool calls it made (content may then be null).")
    tool_call_id: str | None = Field(None, description="On a `tool` message: the id of the call this result answers.")
    refusal: str | None = Field(None, description="Accepted on assistant messages the openai client sends back.")

    def text(self) -> str | None:
        if self.content is None or isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def as_core(self) -> dict:
        """The message in the core's (OpenAI's) dict shape."""
        message = {"role": "system" if self.role == "developer" else self.role, "content": self.text()}
        if self.tool_calls:
            message["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


class StreamOptions(Strict):
    include_usage: bool = Field(False, description="Send a last chunk with token usage before [DONE].")


class FunctionDefinition(BaseModel):
    name: str = Field(description="1-64 of a-z, A-Z, 0-9, _ and -; unique among the tools.")
    description: str | None = Field(None, description="What the tool does; shown to the model.")
    parameters: dict[str, Any] | None = Field(
        None, description="JSON schema of the arguments (an object schema); omitted: the tool takes none. "
        "Generation is constrained to it; a schema the grammar compiler cannot enforce (e.g. `uniqueItems`) is a 400.")
    strict: bool | None = Field(None, description="Accepted; arguments always follow the schema.")


class Tool(BaseModel):
    type: Literal["function"] = Field(description="Only function tools.")
    function: FunctionDefinition


class JsonSchemaFormat(BaseModel):
    name: str = Field("response", description="A name for the schema.")
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema", description="The JSON schema the answer follows.")
    strict: bool | None = Field(None, description="Accepted; the answer always follows the schema.")
    model_config = ConfigDict(populate_by_name=True)


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"] = Field(
        description="`text`; `json_object`: any JSON object; `json_schema`: JSON valid against `json_schema.schema`.")
    json_schema: JsonSchemaFormat | None = Field(None, description="With type `json_schema`.")

    def as_core(self) -> dict:
        body = {"type": self.type}
        if self.json_schema is not None:
            body["json_schema"] = self.json_schema.model_dump(by_alias=True)
        return body


class ChatCompletionRequest(Strict):
    model: str | None = Field(None, description="A text-generation model of the catalogue; default: the first one.",
                              examples=["chat"])
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
    safety_identifier: str | None = Field(None, description="Like `user`: accepted, not stored.")
    prompt_cache_key: str | None = Field(None, description="Accepted for compatibility; there is no prompt cache.")
    metadata: dict[str, str] | None = Field(None, description="Accepted for compatibility; completions are not stored.")
    # Accepted only at their neutral values (what the openai client sends by default or when asked for plain text):
    presence_penalty: float | None = Field(None, ge=-2, le=2, description="Only 0 is supported.")
    frequency_penalty: float | None = Field(None, ge=-2, le=2, description="Only 0 is supported.")
    logit_bias: dict[str, float] | None = Field(None, description="Only an empty map is supported.")
    logprobs: bool | None = Field(None, description="Only false is supported.")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="Only 0 is supported.")
    response_format: ResponseFormat | None = Field(
        None, description="`json_object` or `json_schema`: generation is constrained to the schema, so the answer "
        "parses and validates (unless max_tokens cuts it: finish_reason `length`).")
    tools: list[Tool] | None = Field(
        None, description="Function tools the model may call. A reply that calls one has `tool_calls` (content "
        "null) and finish_reason `tool_calls`; its arguments always validate against the tool's parameters.")
    # Checked by the core (a 400 naming tool_choice, in words): "auto" | "none" | "required" | NamedToolChoice.
    tool_choice: str | dict[str, Any] | None = Field(
        None, description="`auto` (default with tools): text or a call; `none`: text; `required`: a call of one "
        "of the tools; `{\"type\": \"function\", \"function\": {\"name\": ...}}`: a call of that tool.")
    parallel_tool_calls: bool | None = Field(None, description="Accepted; a reply makes at most one tool call.")
    store: bool | None = Field(None, description="Only false: completions are not stored.")
    modalities: list[str] | None = Field(None, description="Only `[\"text\"]`.")
    service_tier: str | None = Field(None, description="Only `auto` or `default`.")

    def refuse_unsupported(self) -> None:
        """Fields the openai client may send that this server cannot honour: a 400 that names the field."""
        refusals = {
            "presence_penalty": (self.presence_penalty not in (None, 0), "presence penalties are not supported; send 0"),
            "frequency_penalty": (self.frequency_penalty not in (None, 0), "frequency penalties are not supported; send 0"),
            "logit_bias": (bool(self.logit_bias), "logit_bias is not supported"),
            "logprobs": (bool(self.logprobs), "log probabilities are not returned"),
            "top_logprobs": (bool(self.top_logprobs), "log probabilities are not returned"),
            "store": (bool(self.store), "completions are not stored"),
            "modalities": (self.modalities not in (None, ["text"]), "only text output is supported"),
            "service_tier": (self.service_tier not in (None, "auto", "default"), "there are no service tiers"),
        }
        for field, (refused, reason) in refusals.items():
            if refused:
                raise InvalidInput(f"Unsupported {field}: {reason}.", field)

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
        "examples": [
            {"model": "chat", "messages": [{"role": "user", "content": "What is the capital of France?"}],
             "max_tokens": 32, "temperature": 0},
            {"model": "chat", "messages": [{"role": "user", "content": "What is the weather in Oslo?"}],
             "max_tokens": 48, "tool_choice": "required",
             "tools": [{"type": "function", "function": {
                 "name": "get_weather", "description": "Current weather in a city",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                                "required": ["city"], "additionalProperties": False}}}]},
            {"model": "chat", "messages": [{"role": "user", "content": "Invent a person."}], "max_tokens": 48,
             "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": {
                 "type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                                  "age": {"type": "integer", "minimum": 0, "maximum": 120}},
                 "required": ["name", "age"], "additionalProperties": False}}}},
        ]
    })


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = Field(description="The answer's text; null when the reply is a tool call.")
    tool_calls: list[MessageToolCall] | None = Field(None, description="The tool call the model made, if any.")


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatChoiceMessage
    finish_reason: Literal["stop", "length", "tool_calls"] | None


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


# --- tensor models ------------------------------------------------------------------------------

Grid = list[list[float]]


class ClassifyRequest(Strict):
    inputs: list = Field(
        validation_alias=AliasChoices("inputs", "pixels"),
        description="Rows of the classifier's input: one row, one flat row, or a list of rows. For `digits`: one 8x8 "
        "grid, 64 values, or a list of 8x8 grids of ink from 0 (background) to 16 (full ink); `pixels` is accepted "
        "as the key too.")
    model: str | None = Field(None, description="Defaults to the classifier in the path.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"pixels": [
        [0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0], [0, 3, 15, 2, 0, 11, 8, 0],
        [0, 4, 12, 0, 0, 8, 8, 0], [0, 5, 8, 0, 0, 9, 8, 0], [0, 4, 11, 0, 1, 12, 7, 0],
        [0, 2, 14, 5, 10, 12, 0, 0], [0, 0, 6, 13, 10, 0, 0, 0]]}]})


class Prediction(BaseModel):
    label: int = Field(description="Index of the most likely class (the digit itself for `digits`).")
    class_name: str = Field(description="Name of the most likely class, from the catalogue's labels.")
    confidence: float = Field(description="Probability of that class.")
    probabilities: list[float] = Field(description="Probability of each class, in label order.")
    pixels: list | None = Field(None, description="For uploaded images: the input row the model saw (8x8 ink for digits).")

    @classmethod
    def of(cls, result) -> Prediction:
        """From the core's ``Classification``: REST and MCP answer in the same shape."""
        return cls(label=result.label, class_name=result.class_name, confidence=result.confidence,
                   probabilities=result.probabilities, pixels=result.input)


class ClassifyResponse(BaseModel):
    model: str
    predictions: list[Prediction]


class V1PredictRequest(Strict):
    instances: list = Field(min_length=1, description="KServe V1: one instance per row. For a model with one input, "
                            "each instance is that input's row; with several inputs, an object keyed by input name.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"instances": [[[0] * 8] * 8]}]})


class V1PredictResponse(BaseModel):
    predictions: list = Field(description="One per instance: the output's row, or an object keyed by output name when "
                              "the model has several outputs.")


# --- chat sessions ------------------------------------------------------------------------------

class SessionCreate(Strict):
    title: str = Field("", max_length=200, description="Shown in lists; defaults to the first user message.")
    agent: str | None = Field(None, description="Bind the session to an agent: its system prompt applies to every turn.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"title": "Trip planning"}]})


class StoredToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: dict[str, Any] = Field(description='{"name", "arguments": "<JSON text>"}, as OpenAI writes a call.')


class StoredMessage(BaseModel):
    role: str = Field(description="system, user, assistant or tool (an action's outcome, answering a call).")
    content: str | None = Field(description="None for an assistant message that only called a tool.")
    tool_calls: list[StoredToolCall] | None = Field(None, description="The assistant's calls of tools or actions.")
    tool_call_id: str | None = Field(None, description="The call a tool message answers.")
    tokens: int = Field(description="Tokens of this message, counted by the chat model's tokenizer.")
    created_at: str


SessionState = Literal["idle", "waiting_for_confirmation", "running_action"]


class SessionAction(BaseModel):
    """An action an agent proposed in a session, and what became of it."""

    id: str
    object: Literal["session.action"] = "session.action"
    session_id: str
    name: str = Field(description="The action (see GET /v1/actions).")
    arguments: dict[str, Any] = Field(description="Its arguments, checked against the action's schema.")
    tool_call_id: str | None = Field(description="The model's call this answers.")
    proposed_by: str | None = Field(description="The agent that proposed it.")
    model: str | None = Field(description="The model that wrote the call.")
    status: Literal["pending", "running", "succeeded", "failed", "rejected"]
    reason: str | None = Field(description="Why it was rejected.")
    result: Any = Field(None, description="What the action returned (a job's id, a remote's output...).")
    error: str | None = Field(description="Why it failed, when it ran and failed.")
    decided_by: str | None = Field(description="The API key id that decided, or `auto` for an action without "
                                   "confirmation.")
    proposed_at: str
    decided_at: str | None
    finished_at: str | None


class SessionInfo(BaseModel):
    id: str
    object: Literal["chat.session"] = "chat.session"
    title: str
    agent: str | None
    state: SessionState = Field(description="waiting_for_confirmation while an action waits for accept or reject; a "
                                "new message is then refused with a 409.")
    created_at: str
    updated_at: str


class SessionDetail(SessionInfo):
    messages: list[StoredMessage]
    pending_action: SessionAction | None = Field(description="The action waiting for a decision, if any.")


class ActionAccept(Strict):
    action_id: str | None = Field(None, description="The action meant (the pending one when omitted): a retry "
                                  "naming it gets a 409 that says how it was decided.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{}, {"action_id": "3f2a9c0d1e4b5a6f"}]})


class ActionReject(Strict):
    reason: str = Field(min_length=1, max_length=2000, description="Why: written to the history for the model.",
                        examples=["Wrong texts; embed the titles instead."])
    action_id: str | None = Field(None, description="The action meant (the pending one when omitted).")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reason": "Embed the titles instead."}]})


class PendingActions(BaseModel):
    actions: list[SessionAction] = Field(description="Waiting actions, oldest first.")


class ActionInfo(BaseModel):
    name: str
    uses: str = Field(description="The built-in that runs it.")
    description: str
    confirm: bool = Field(description="Whether a person must accept each call before it runs.")
    parameters: dict[str, Any] = Field(description="JSON schema of the arguments the model chooses.")
    fixed_arguments: dict[str, Any] = Field(description="Arguments the deployer fixed for every call.")


# --- durable jobs -------------------------------------------------------------------------------

NonEmptyText = Annotated[str, Field(min_length=1, max_length=20_000)]


class EmbedJob(Strict):
    kind: Literal["embed"]
    model: str | None = Field(None, description="A sentence-embedding model; default: the first one.")
    inputs: list[NonEmptyText] = Field(min_length=1, description="Texts to embed; results are 384-d vectors.")


class ClassifyJob(Strict):
    kind: Literal["classify"]
    model: str | None = Field(None, description="A classifier (a tensor model with labels); default: the first one.")
    inputs: list[list] = Field(min_length=1, description="Rows of the classifier's input (8x8 grids of ink 0..16 for "
                               "digits); results are labels and probabilities.")


class CompleteJob(Strict):
    kind: Literal["complete"]
    model: str | None = Field(None, description="A text-generation model; default: the first one.")
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


# --- agents -------------------------------------------------------------------------------------

class AgentCreate(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="Lower-case letters, digits and dashes.",
                      examples=["pirate"])
    system_prompt: str = Field(min_length=1, max_length=4000, examples=["You are a pirate. Answer like one."])
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(256, ge=1, description="Default answer length (bounded by the server's limit).")
    actions: list[str] = Field(default_factory=list, max_length=32, description="Actions it may take (GET "
                               "/v1/actions); unknown names are a 400. Its chat needs a session to take them.")
    tool_choice: Literal["auto", "required"] = Field("auto", description="required: every answer is a call, of an "
                                                     "action or of the built-in `reply` (for plain answers).")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "pirate", "system_prompt": "You are a pirate. Answer like one.", "temperature": 0.9, "max_tokens": 128},
        {"name": "clerk", "system_prompt": "You submit batch jobs for the user.", "actions": ["submit_job"],
         "tool_choice": "required"}]})


class AgentInfo(BaseModel):
    name: str
    system_prompt: str
    temperature: float
    max_tokens: int
    actions: list[str] = Field(description="Actions it may take.")
    tool_choice: Literal["auto", "required"]
    created_at: str
    ui_url: str = Field(description="The agent's chat UI; it works at once, no restart.")


# --- remote Gradio backends ---------------------------------------------------------------------

class RemoteRequest(Strict):
    inputs: list[Any] = Field(description="Positional inputs of the remote endpoint. A file is {\"url\": ...} or "
                              "{\"data\": <base64>, \"name\": \"x.png\"}.", examples=[["hello"]])

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"inputs": ["hello"]}]})


class RemoteResponse(BaseModel):
    backend: str
    output: Any = Field(description="What the remote returned; files come back as {\"name\", \"data\": <base64>}.")
