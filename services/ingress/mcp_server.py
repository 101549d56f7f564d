"""MCP (Model Context Protocol) tools over the same core services as the REST routes.

Served by the official ``mcp`` SDK (2.x, ``MCPServer``) over streamable HTTP, mounted in the ingress at
``/mcp`` as a plain sub-app so app-wide middleware (body limit, auth) covers it. The session manager runs
stateless: any ingress replica can answer any request, so the endpoint scales like the REST API.

Tools come from the catalogue: one per capability (embed, rank, classify, predict, chat), each with a ``model``
argument listing the catalogue's models that serve it; and durable jobs (stored, run in the background by the job
runner, owned by the caller's API key exactly as through ``/v1/jobs``).
"""


import base64
import binascii
import logging
from contextlib import contextmanager
from typing import Annotated, Literal

import numpy as np
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.applications import Starlette

from services.config import McpArgs
from services.core.catalogue import describe, faces
from services.core.chat import Sampling
from services.core.services import Core
from services.errors import RaydioError
from services.ingress.schemas import (
    ClassifyResponse,
    CompleteJob,
    JobCreate,
    JobInfo,
    PendingActions,
    Prediction,
    SessionAction,
)

READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
SAMPLED = ToolAnnotations(read_only_hint=True, idempotent_hint=False, open_world_hint=False)

# --- results (become each tool's output schema) ------------------------------------------------------


class ModelSummary(BaseModel):
    name: str = Field(description="The model's name: pass it as `model` to the tools.")
    kind: str = Field(description="sentence-embedding, text-generation or torchscript.")
    ready: bool = Field(description="Whether the model's deployment answered just now.")
    model_id: str | None = Field(None, description="The underlying model.")
    device: str | None = Field(None, description="Where it runs: cpu or cuda.")
    description: str = ""
    routes: list[str] = Field(description="Where the model is reached: REST routes, MCP tools, its UI.")


class ModelsResult(BaseModel):
    models: list[ModelSummary]


class EmbedResult(BaseModel):
    dimensions: int = Field(description="Length of each vector.")
    embeddings: list[list[float]] = Field(description="One L2-normalised vector per input text, in input order.")
    tokens: list[int] = Field(description="Tokens each text cost.")


class RankedText(BaseModel):
    text: str
    score: float = Field(description="Cosine similarity to the query, from -1 to 1.")
    index: int = Field(description="Position of the text in the input list.")


class SimilarityResult(BaseModel):
    ranking: list[RankedText] = Field(description="The texts, most similar to the query first.")


class PredictResult(BaseModel):
    model: str
    outputs: dict[str, list] = Field(description="Each declared output by name, one row per input row.")


class JobList(BaseModel):
    jobs: list[JobInfo] = Field(description="Most recent first; results omitted (read one job for them).")


class ChatResult(BaseModel):
    text: str = Field(description="The model's answer.")
    finish_reason: str | None = Field(description="stop (the model ended) or length (max_tokens reached).")
    prompt_tokens: int
    completion_tokens: int


# --- inputs -------------------------------------------------------------------------------------------

Texts = Annotated[list[Annotated[str, Field(min_length=1)]], Field(
    min_length=1, description="Non-empty texts, each up to the model's window (256 tokens, about 200 words, for embedder).")]
ImageBase64 = Annotated[str, Field(
    min_length=1, description="A PNG or JPEG, base64-encoded (a data: URL prefix is accepted). For digits: one digit, "
                              "dark ink on a light background or the reverse, any size.")]


JobKind = Annotated[Literal["embed", "classify", "complete"], Field(
    description="embed: texts to vectors; classify: rows of a classifier's input to labels; complete: prompts to answers.")]
JobInputs = Annotated[list[str] | list[list], Field(
    min_length=1, description="One item per result: texts for embed and complete, rows of the classifier's input (8x8 "
                              "grids of ink 0-16 for digits) for classify. Up to 10 000 items by default.")]
JOB_CREATE = TypeAdapter(JobCreate)


@contextmanager
def _tool_errors():
    """Domain errors become tool errors the assistant can read and act on."""
    try:
        yield
    except RaydioError as exc:
        raise ToolError(exc.message) from exc


def _model_arg(core: Core, kind: str, what: str, names: list[str] | None = None):
    """The `model` argument of a tool: the catalogue's models that serve it, the first by default."""
    names = names if names is not None else [m.name for m in core.catalogue.of_kind(kind)]
    listed = "; ".join(f"{n}: {describe(core.catalogue.get(n))}" for n in names)
    return Annotated[str | None, Field(description=f"The {what} model to use (default {names[0]}). Models: {listed}")]


def _model_tools(server: MCPServer, core: Core) -> None:
    catalogue, limits = core.catalogue, core.limits

    @server.tool(title="List models", annotations=READ_ONLY)
    async def list_models() -> ModelsResult:
        """List raydio's models: what each is, whether it is ready, and where it is reached."""
        return ModelsResult(models=[
            ModelSummary(name=s.name, kind=catalogue.get(s.name).kind, ready=s.ready,
                         model_id=s.info.get("model_id") or catalogue.get(s.name).identity, device=s.info.get("device"),
                         description=describe(catalogue.get(s.name)), routes=faces(catalogue.get(s.name)))
            for s in await core.client.statuses()
        ])

    if catalogue.of_kind("sentence-embedding"):
        EmbeddingModel = _model_arg(core, "sentence-embedding", "sentence-embedding")

        @server.tool(title="Embed texts", annotations=READ_ONLY)
        async def embed(texts: Texts, model: EmbeddingModel = None) -> EmbedResult:
            """Turn texts into sentence embeddings (L2-normalised by default, so the dot product is the cosine
            similarity). Use for storing vectors; to compare texts, rank_by_similarity is simpler."""
            with _tool_errors():
                result = await core.models.embed(model, texts)
            return EmbedResult(dimensions=result.dimensions, embeddings=result.vectors, tokens=result.tokens)

        @server.tool(title="Rank texts by similarity", annotations=READ_ONLY)
        async def rank_by_similarity(
            query: Annotated[str, Field(min_length=1, description="What to compare every text with.")],
            texts: Texts,
            model: EmbeddingModel = None,
        ) -> SimilarityResult:
            """Rank texts by how close their meaning is to the query (semantic search over a short list), most
            similar first. Scores are cosine similarities: above ~0.5 is closely related, near 0 unrelated."""
            with _tool_errors():
                ranking = await core.models.rank(model, query, texts)
            return SimilarityResult(ranking=[RankedText(text=r.text, score=r.score, index=r.index) for r in ranking])

    tensor_models = catalogue.of_kind("torchscript")
    if tensor_models:
        TensorModelArg = _model_arg(core, "torchscript", "tensor")

        @server.tool(title="Run a tensor model", annotations=READ_ONLY)
        async def predict(
            inputs: Annotated[dict[str, list], Field(description="Each input of the model by name: a list of rows of "
                                                     "its declared shape (see list_models / GET /v2/models/{name}).")],
            model: TensorModelArg = None,
        ) -> PredictResult:
            """Run a tensor model on rows of its declared inputs; returns every declared output, one row per input row."""
            try:
                arrays = {name: np.asarray(value) for name, value in inputs.items()}
            except ValueError:
                raise ToolError("Every input must be a rectangular array (rows of equal length).") from None
            with _tool_errors():
                entry, outputs = await core.models.predict(model, arrays)
            return PredictResult(model=entry.name, outputs={k: v.tolist() for k, v in outputs.items()})

    classifiers = [m.name for m in tensor_models if m.labels]
    if classifiers:
        Classifier = _model_arg(core, "torchscript", "classifier", classifiers)

        @server.tool(title="Classify", annotations=READ_ONLY)
        async def classify(
            inputs: Annotated[list, Field(min_length=1, description="One row of the classifier's input or a list of rows. "
                                          "For digits: an 8x8 grid of ink intensities 0 (background) to 16 (full ink), "
                                          "the digit filling the grid, as in scikit-learn's digits.")],
            model: Classifier = None,
        ) -> ClassifyResponse:
            """Classify rows with a classifier: the most likely class of each, with every class's probability."""
            with _tool_errors():
                results = await core.models.classify(model, inputs)
            return ClassifyResponse(model=model or classifiers[0], predictions=[Prediction.of(r) for r in results])

    image_models = [m.name for m in tensor_models if m.labels and m.image is not None]
    if image_models:
        ImageClassifier = _model_arg(core, "torchscript", "image classifier", image_models)

        @server.tool(title="Classify an image", annotations=READ_ONLY)
        async def classify_image(image_base64: ImageBase64, model: ImageClassifier = None) -> Prediction:
            """Classify a PNG or JPEG image; also returns the input the model saw (for digits, the 8x8 grid)."""
            encoded = image_base64.split(",", 1)[1] if image_base64.startswith("data:") else image_base64
            try:
                data = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise ToolError("image_base64 is not valid base64.") from None
            with _tool_errors():
                return Prediction.of(await core.models.classify_image(model or image_models[0], data))

    if catalogue.of_kind("text-generation"):
        ChatModel = _model_arg(core, "text-generation", "text-generation")

        @server.tool(title="Chat with a model", annotations=SAMPLED)
        async def chat(
            prompt: Annotated[str, Field(min_length=1, description="The user's message.")],
            system: Annotated[str | None, Field(description="Optional system instruction that steers the answer.")] = None,
            max_tokens: Annotated[int | None, Field(ge=1, description="Most tokens to generate: the model's default when "
                                                    f"omitted; this server allows up to {limits.max_completion_tokens}.")] = None,
            temperature: Annotated[float, Field(ge=0, le=2, description="0 answers deterministically; higher is more "
                                                                        "varied.")] = 0.7,
            model: ChatModel = None,
        ) -> ChatResult:
            """Ask a text-generation model and get its whole answer. The default (SmolLM2-135M-Instruct) is small and
            fast: good for rewording, short drafts and simple questions; it often gets facts wrong."""
            messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
            with _tool_errors():
                answer = await core.chat.complete(None, messages, model, Sampling(max_tokens=max_tokens, temperature=temperature))
            return ChatResult(text=answer.text, finish_reason=answer.finish_reason, prompt_tokens=answer.prompt_tokens,
                              completion_tokens=answer.completion_tokens)


def _owner(ctx: Context) -> str:
    """The API key the request came with (set by the ingress's auth middleware); jobs belong to it."""
    request = ctx.request_context.request
    principal = getattr(getattr(request, "state", None), "principal", None)
    if principal is None:
        raise ToolError("Job and action tools need an authenticated HTTP request.")
    return principal.key_id


def _job_tools(server: MCPServer, core: Core) -> None:
    @server.tool(title="Submit a batch job", annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False,
                                                                          idempotent_hint=False, open_world_hint=False))
    async def submit_job(
        ctx: Context,
        kind: JobKind,
        inputs: JobInputs,
        max_tokens: Annotated[int, Field(ge=1, description="complete only: tokens per answer.")] = 64,
        temperature: Annotated[float, Field(ge=0, le=2, description="complete only: 0 is deterministic.")] = 0.7,
        model: Annotated[str | None, Field(description="The model to run the job with; default: the kind's first "
                                           f"model. Models: {', '.join(core.catalogue.names)}.")] = None,
    ) -> JobInfo:
        """Store a batch (many texts to embed, grids to classify or prompts to answer) that runs in the background
        and survives restarts. Returns at once with the job's id and status; poll get_job for progress and results."""
        extra = {"max_tokens": max_tokens, "temperature": temperature} if kind == "complete" else {}
        try:
            job = JOB_CREATE.validate_python({"kind": kind, "inputs": inputs, "model": model, **extra})
        except ValidationError as exc:
            raise ToolError("Invalid job: " + "; ".join(
                f"{'.'.join(map(str, e['loc'][1:])) or 'job'}: {e['msg']}" for e in exc.errors())) from None
        generation = {"max_tokens": job.max_tokens, "temperature": job.temperature} if isinstance(job, CompleteJob) else {}
        with _tool_errors():
            return JobInfo.model_validate(await core.jobs.submit(_owner(ctx), job.kind, job.inputs, job.model, **generation))

    @server.tool(title="Read a job", annotations=READ_ONLY)
    async def get_job(
        ctx: Context,
        job_id: Annotated[str, Field(min_length=1, description="The id submit_job returned.")],
    ) -> JobInfo:
        """A job's status (queued, running, succeeded, failed, cancelled), progress, and its results once it
        succeeded: one per input, in order."""
        with _tool_errors():
            return JobInfo.model_validate(await core.jobs.get(_owner(ctx), job_id))

    @server.tool(title="List jobs", annotations=READ_ONLY)
    async def list_jobs(ctx: Context) -> JobList:
        """The caller's most recent jobs with status and progress (without results)."""
        return JobList(jobs=[JobInfo.model_validate(job) for job in await core.jobs.list(_owner(ctx))])


SessionId = Annotated[str, Field(min_length=1, description="The chat session the action waits in.")]
ActionId = Annotated[str | None, Field(description="The action meant (the waiting one when omitted); a retry naming "
                                                   "it gets an error saying how it was decided.")]


def _action_tools(server: MCPServer, core: Core) -> None:
    """A person's decisions on actions agents proposed in their sessions; owner-checked like the REST routes (another
    key's session does not exist). The endpoint is stateless, so it never asks: it lists, accepts and rejects."""

    @server.tool(title="List pending actions", annotations=READ_ONLY)
    async def list_pending_actions(
        ctx: Context,
        session_id: Annotated[str | None, Field(description="Only this session's (all of the caller's when "
                                                            "omitted).")] = None,
    ) -> PendingActions:
        """Actions agents proposed in the caller's chat sessions that wait for a person's accept or reject: name,
        arguments, which agent and model proposed them, and when."""
        with _tool_errors():
            return PendingActions(actions=await core.actions.pending(_owner(ctx), session_id))

    @server.tool(title="Accept an action", annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False,
                                                                        idempotent_hint=True, open_world_hint=False))
    async def accept_action(ctx: Context, session_id: SessionId, action_id: ActionId = None) -> SessionAction:
        """Run the action waiting in a session, exactly once; returns it with its result (a job's id, say), which
        the agent reads on its next turn. A second decision is refused, naming the first."""
        with _tool_errors():
            return SessionAction.model_validate(await core.actions.accept(_owner(ctx), session_id, action_id))

    @server.tool(title="Reject an action", annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False,
                                                                        idempotent_hint=True, open_world_hint=False))
    async def reject_action(
        ctx: Context,
        session_id: SessionId,
        reason: Annotated[str, Field(min_length=1, max_length=2000, description="Why; the agent reads it.")],
        action_id: ActionId = None,
    ) -> SessionAction:
        """Discard the action waiting in a session, with a reason that goes to the history for the agent's next
        turn. A second decision is refused, naming the first."""
        with _tool_errors():
            return SessionAction.model_validate(await core.actions.reject(_owner(ctx), session_id, reason, action_id))


def _instructions(core: Core) -> str:
    models = "\n".join(f"- {m.name} ({m.kind}): {describe(m)}" for m in core.catalogue.entries.values())
    return f"""raydio serves these models (use `list_models` to see which are ready):
{models}
Every model tool takes an optional `model` argument naming one of them. Small chat models are fast but not
knowledgeable: do not rely on them for facts. For many inputs at once, `submit_job` stores a batch that runs in
the background; poll it with `get_job`. Agents may propose actions in chat sessions that wait for the user:
`list_pending_actions`, then `accept_action` or `reject_action` (with a reason) as the user decides."""


def build_mcp_server(core: Core) -> MCPServer:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    server = MCPServer(name="raydio", title="raydio models", version="0.1.0", instructions=_instructions(core),
                       description="PyTorch models on Ray Serve, from raydio's model catalogue.")
    root.handlers[:] = handlers  # MCPServer calls logging.basicConfig; the host process owns logging
    root.setLevel(level)
    _model_tools(server, core)
    _job_tools(server, core)
    _action_tools(server, core)
    return server


def build_mcp_app(server: MCPServer, args: McpArgs, max_body_bytes: int) -> Starlette:
    """The streamable-HTTP ASGI app, to mount at ``/mcp``. Its session manager must run in the host app's lifespan
    (``server.session_manager.run()``): a mounted app's own lifespan never runs."""
    if "*" in args.allowed_hosts:
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    else:
        security = TransportSecuritySettings(allowed_hosts=list(args.allowed_hosts),
                                             allowed_origins=list(args.allowed_origins))
    return server.streamable_http_app(streamable_http_path="/", stateless_http=True, transport_security=security,
                                      max_request_body_size=max_body_bytes)
