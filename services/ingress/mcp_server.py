"""MCP (Model Context Protocol) tools over the same ``ModelBackends`` as the REST routes.

Served by the official ``mcp`` SDK (2.x, ``MCPServer``) over streamable HTTP, mounted in the ingress at
``/mcp`` as a plain sub-app so app-wide middleware (body limit, auth) covers it. The session manager runs
stateless: any ingress replica can answer any request, so the endpoint scales like the REST API.

Tools come in two groups: the models, called directly, and durable jobs (stored, run in the background by
the job runner, owned by the caller's API key exactly as through ``/v1/jobs``).
"""

from __future__ import annotations

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

from services.config import JobsArgs, LimitsArgs, McpArgs
from services.errors import RaydioError
from services.ingress.backends import MODEL_DESCRIPTIONS, ModelBackends
from services.ingress.jobs import JobStore, job_params
from services.ingress.schemas import CompleteJob, JobCreate, JobInfo

INSTRUCTIONS = """raydio serves three PyTorch models. Use `list_models` to see which are ready.
`embed` and `rank_by_similarity` work on sentences (all-MiniLM-L6-v2); `classify_digit` and
`classify_digit_image` recognise one handwritten digit; `chat` asks a small (135M) instruction-tuned
model, which is fast but not knowledgeable: do not rely on it for facts. For many inputs at once,
`submit_job` stores a batch that runs in the background; poll it with `get_job`."""

READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
SAMPLED = ToolAnnotations(read_only_hint=True, idempotent_hint=False, open_world_hint=False)

# --- results (become each tool's output schema) ------------------------------------------------------


class ModelSummary(BaseModel):
    name: str = Field(description="Short model name.")
    ready: bool = Field(description="Whether the model's deployment answered just now.")
    model_id: str | None = Field(None, description="The underlying model.")
    device: str | None = Field(None, description="Where it runs: cpu or cuda.")
    description: str = ""
    tools: list[str] = Field(description="The MCP tools that use this model.")


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


class DigitResult(BaseModel):
    label: int = Field(description="The most likely digit, 0-9.")
    confidence: float = Field(description="Probability of that digit.")
    probabilities: list[float] = Field(description="Probability of each digit; index i is digit i.")
    pixels: list[list[float]] | None = Field(None, description="For images: the 8x8 grid (ink 0-16) the model saw.")


class JobList(BaseModel):
    jobs: list[JobInfo] = Field(description="Most recent first; results omitted (read one job for them).")


class ChatResult(BaseModel):
    text: str = Field(description="The model's answer.")
    finish_reason: str | None = Field(description="stop (the model ended) or length (max_tokens reached).")
    prompt_tokens: int
    completion_tokens: int


# --- inputs -------------------------------------------------------------------------------------------

Texts = Annotated[list[Annotated[str, Field(min_length=1)]], Field(
    min_length=1, description="Non-empty texts, each up to 256 tokens (about 200 words).")]
Row = Annotated[list[Annotated[float, Field(ge=0, le=16)]], Field(min_length=8, max_length=8)]
Grid = Annotated[list[Row], Field(
    min_length=8, max_length=8,
    description="8 rows of 8 ink intensities: 0 is background, 16 is full ink (scikit-learn's digits scale). "
                "The digit should fill the grid, as in a scanned, centred, size-normalised digit.")]
ImageBase64 = Annotated[str, Field(
    min_length=1, description="A PNG or JPEG of one digit, base64-encoded (a data: URL prefix is accepted). Dark ink "
                              "on a light background or the reverse; any size. It is cropped and scaled to 8x8.")]


JobKind = Annotated[Literal["embed", "classify", "complete"], Field(
    description="embed: texts to 384-d vectors; classify: 8x8 digit grids to labels; complete: prompts to answers.")]
JobInputs = Annotated[list[str] | list[Grid], Field(
    min_length=1, description="One item per result: texts for embed and complete, 8x8 grids (ink 0-16) for classify. "
                              "Up to 10 000 items by default.")]
JOB_CREATE = TypeAdapter(JobCreate)


@contextmanager
def _tool_errors():
    """Domain errors become tool errors the assistant can read and act on."""
    try:
        yield
    except RaydioError as exc:
        raise ToolError(exc.message) from exc


def _digit(probabilities: list[float], pixels: list[list[float]] | None = None) -> DigitResult:
    label = int(np.argmax(probabilities))
    return DigitResult(label=label, confidence=probabilities[label], probabilities=probabilities, pixels=pixels)


async def _complete(backends: ModelBackends, messages: list[dict], params: dict) -> ChatResult:
    """The whole answer of a streamed generation."""
    text, finish_reason, prompt_tokens, completion_tokens = [], None, 0, 0
    async for chunk in backends.chat(messages, params):
        prompt_tokens = chunk.get("prompt_tokens", prompt_tokens)
        text.append(chunk.get("text", ""))
        finish_reason = chunk.get("finish_reason") or finish_reason
        completion_tokens = chunk.get("completion_tokens") or completion_tokens
    return ChatResult(text="".join(text), finish_reason=finish_reason, prompt_tokens=prompt_tokens,
                      completion_tokens=completion_tokens)


TOOLS_BY_MODEL = {"embedder": ["embed", "rank_by_similarity"], "digits": ["classify_digit", "classify_digit_image"],
                  "chat": ["chat"]}


def _model_tools(server: MCPServer, backends: ModelBackends, limits: LimitsArgs) -> None:
    @server.tool(title="List models", annotations=READ_ONLY)
    async def list_models() -> ModelsResult:
        """List raydio's models: whether each is ready, what it is, and which tools use it."""
        return ModelsResult(models=[
            ModelSummary(name=s.name, ready=s.ready, model_id=s.info.get("model_id"), device=s.info.get("device"),
                         description=MODEL_DESCRIPTIONS.get(s.name, ""), tools=TOOLS_BY_MODEL.get(s.name, []))
            for s in await backends.statuses()
        ])

    @server.tool(title="Embed texts", annotations=READ_ONLY)
    async def embed(texts: Texts) -> EmbedResult:
        """Turn texts into 384-dimensional sentence embeddings (all-MiniLM-L6-v2, L2-normalised, so the dot product
        is the cosine similarity). Use for storing vectors; to compare texts, rank_by_similarity is simpler."""
        with _tool_errors():
            result = await backends.embed(texts)
        return EmbedResult(dimensions=len(result["vectors"][0]), embeddings=result["vectors"], tokens=result["tokens"])

    @server.tool(title="Rank texts by similarity", annotations=READ_ONLY)
    async def rank_by_similarity(
        query: Annotated[str, Field(min_length=1, description="What to compare every text with.")],
        texts: Texts,
    ) -> SimilarityResult:
        """Rank texts by how close their meaning is to the query (semantic search over a short list), most
        similar first. Scores are cosine similarities: above ~0.5 is closely related, near 0 unrelated."""
        with _tool_errors():
            result = await backends.embed([query, *texts])
        vectors = np.asarray(result["vectors"], dtype=np.float32)
        scores = vectors[1:] @ vectors[0]
        order = np.argsort(-scores, kind="stable")
        return SimilarityResult(ranking=[RankedText(text=texts[i], score=round(float(scores[i]), 4), index=int(i))
                                         for i in order])

    @server.tool(title="Classify a digit grid", annotations=READ_ONLY)
    async def classify_digit(pixels: Grid) -> DigitResult:
        """Recognise one handwritten digit (0-9) given as an 8x8 grid of ink intensities from 0 to 16."""
        with _tool_errors():
            probabilities = await backends.classify(np.asarray([pixels], dtype=np.float32))
        return _digit(probabilities[0])

    @server.tool(title="Classify a digit image", annotations=READ_ONLY)
    async def classify_digit_image(image_base64: ImageBase64) -> DigitResult:
        """Recognise one handwritten digit (0-9) in a PNG or JPEG image; also returns the 8x8 grid the model saw."""
        encoded = image_base64.split(",", 1)[1] if image_base64.startswith("data:") else image_base64
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ToolError("image_base64 is not valid base64.") from None
        with _tool_errors():
            result = await backends.classify_image(data)
        return _digit(result["probabilities"], result["pixels"])

    @server.tool(title="Chat with a small model", annotations=SAMPLED)
    async def chat(
        prompt: Annotated[str, Field(min_length=1, description="The user's message.")],
        system: Annotated[str | None, Field(description="Optional system instruction that steers the answer.")] = None,
        max_tokens: Annotated[int | None, Field(ge=1, description="Most tokens to generate: 128 when omitted; the "
                                                                  "server allows up to 512 by default.")] = None,
        temperature: Annotated[float, Field(ge=0, le=2, description="0 answers deterministically; higher is more "
                                                                    "varied.")] = 0.7,
    ) -> ChatResult:
        """Ask SmolLM2-135M-Instruct, a small, fast chat model, and get its whole answer. Good for rewording,
        short drafts and simple questions; it often gets facts wrong."""
        max_tokens = max_tokens or min(128, limits.max_completion_tokens)
        if max_tokens > limits.max_completion_tokens:
            raise ToolError(f"max_tokens is {max_tokens}; this server generates at most {limits.max_completion_tokens}.")
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        params = {"max_tokens": max_tokens, "temperature": temperature, "top_p": 1.0, "stop": (), "seed": None}
        with _tool_errors():
            return await _complete(backends, messages, params)


def _owner(ctx: Context) -> str:
    """The API key the request came with (set by the ingress's auth middleware); jobs belong to it."""
    request = ctx.request_context.request
    principal = getattr(getattr(request, "state", None), "principal", None)
    if principal is None:
        raise ToolError("Job tools need an authenticated HTTP request.")
    return principal.key_id


def _job_tools(server: MCPServer, jobs: JobStore, jobs_args: JobsArgs, limits: LimitsArgs) -> None:
    @server.tool(title="Submit a batch job", annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False,
                                                                          idempotent_hint=False, open_world_hint=False))
    async def submit_job(
        ctx: Context,
        kind: JobKind,
        inputs: JobInputs,
        max_tokens: Annotated[int, Field(ge=1, description="complete only: tokens per answer.")] = 64,
        temperature: Annotated[float, Field(ge=0, le=2, description="complete only: 0 is deterministic.")] = 0.7,
    ) -> JobInfo:
        """Store a batch (many texts to embed, grids to classify or prompts to answer) that runs in the background
        and survives restarts. Returns at once with the job's id and status; poll get_job for progress and results."""
        extra = {"max_tokens": max_tokens, "temperature": temperature} if kind == "complete" else {}
        try:
            job = JOB_CREATE.validate_python({"kind": kind, "inputs": inputs, **extra})
        except ValidationError as exc:
            raise ToolError("Invalid job: " + "; ".join(
                f"{'.'.join(map(str, e['loc'][1:])) or 'job'}: {e['msg']}" for e in exc.errors())) from None
        generation = {"max_tokens": job.max_tokens, "temperature": job.temperature} if isinstance(job, CompleteJob) else {}
        with _tool_errors():
            params = job_params(job.kind, job.inputs, jobs_args.max_items, limits, **generation)
        return JobInfo.model_validate(await jobs.submit(_owner(ctx), job.kind, job.inputs, params))

    @server.tool(title="Read a job", annotations=READ_ONLY)
    async def get_job(
        ctx: Context,
        job_id: Annotated[str, Field(min_length=1, description="The id submit_job returned.")],
    ) -> JobInfo:
        """A job's status (queued, running, succeeded, failed, cancelled), progress, and its results once it
        succeeded: one per input, in order."""
        with _tool_errors():
            return JobInfo.model_validate(await jobs.get(_owner(ctx), job_id))

    @server.tool(title="List jobs", annotations=READ_ONLY)
    async def list_jobs(ctx: Context) -> JobList:
        """The caller's most recent jobs with status and progress (without results)."""
        return JobList(jobs=[JobInfo.model_validate(job) for job in await jobs.list(_owner(ctx))])


def build_mcp_server(backends: ModelBackends, limits: LimitsArgs, jobs: JobStore, jobs_args: JobsArgs) -> MCPServer:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    server = MCPServer(name="raydio", title="raydio models", version="0.1.0", instructions=INSTRUCTIONS,
                       description="PyTorch models on Ray Serve: sentence embeddings, a digit classifier and a small chat model.")
    root.handlers[:] = handlers  # MCPServer calls logging.basicConfig; the host process owns logging
    root.setLevel(level)
    _model_tools(server, backends, limits)
    _job_tools(server, jobs, jobs_args, limits)
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
