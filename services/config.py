"""Configuration: process-level ``Settings`` from the environment, typed ``*Args`` for the Serve app builders.

Hand-written configuration forbids unknown keys, so a typo is an error that names the key
instead of a default silently taking its place.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MODEL_NAMES = ("embedder", "digits", "chat")


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
    device: str = Field("auto", description="Torch device for every model: auto (cuda when present), cpu or cuda.")
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


class EmbedderArgs(DeploymentArgs):
    batching: BatchingArgs = Field(default_factory=BatchingArgs)


class DigitsArgs(DeploymentArgs):
    batching: BatchingArgs = Field(default_factory=lambda: BatchingArgs(max_batch_size=64))
    seed: int = Field(0, description="Seed of the one-time training run; part of the cached checkpoint's identity.")


class ChatArgs(DeploymentArgs):
    max_ongoing_requests: int = Field(4, ge=1, description="Generations one replica interleaves.")
    max_queued_requests: int = Field(16, ge=-1, description="Generations waiting per caller before a 503.")


class LimitsArgs(StrictModel):
    """Bounds on what one request may ask for; beyond them the client gets a 4xx that says which."""

    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 beyond).")
    max_embedding_inputs: int = Field(256, ge=1, description="Most strings in one embeddings request.")
    max_embedding_tokens: int = Field(256, ge=8, description="Most tokens in one string to embed (the model's window).")
    max_digit_images: int = Field(256, ge=1, description="Most pixel grids in one digits request.")
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
    key_cache_s: float = Field(5.0, ge=0, le=300, description="How long a key lookup is cached; bounds how soon a revocation bites.")


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


class IngressArgs(DeploymentArgs):
    max_ongoing_requests: int = Field(128, ge=1, description="Requests the ingress replica works on at once.")
    max_queued_requests: int = Field(512, ge=-1)
    limits: LimitsArgs = Field(default_factory=LimitsArgs)
    auth: AuthArgs = Field(default_factory=AuthArgs)
    mount_ui: bool = Field(True, description="Mount the Gradio UIs under /ui/<name>.")
    mcp: McpArgs = Field(default_factory=McpArgs, description="The MCP endpoint.")


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
    """``args`` of ``services.app:build_app`` in a Serve config file."""

    device: str = Field("auto", description="Torch device for every model replica: auto, cpu or cuda.")
    ingress: IngressArgs = Field(default_factory=IngressArgs)
    embedder: EmbedderArgs = Field(default_factory=EmbedderArgs)
    digits: DigitsArgs = Field(default_factory=DigitsArgs)
    chat: ChatArgs = Field(default_factory=ChatArgs)
    jobs: JobsArgs = Field(default_factory=JobsArgs)
    remotes: list[RemoteGradioArgs] = Field(default_factory=list, description="Remote Gradio apps used as backends.")

    @model_validator(mode="after")
    def _unique_remote_names(self) -> RaydioAppArgs:
        names = [remote.name for remote in self.remotes]
        if len(names) != len(set(names)):
            raise ValueError(f"Got remotes named {names}. Each remote needs its own name.")
        return self


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message says where and why."""


def format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"{source}: {error.error_count()} problem(s)"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  - {where}: unknown key. Check its spelling against the documented fields.")
        else:
            lines.append(f"  - {where}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def load_serve_config(path: Path) -> dict[str, Any]:
    """Read a Serve config file and validate it with Ray's schema and each raydio app's args."""
    from ray.serve.schema import ServeDeploySchema

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
        if app.import_path == "services.app:build_app":
            try:
                RaydioAppArgs.model_validate(app.args or {})
            except ValidationError as exc:
                raise ConfigError(format_validation_error(exc, f"{path}: applications[{i}].args")) from exc
    return raw



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
    sections = ("ingress", "embedder", "digits", "chat", "jobs")
    lines += ["", f"| `args` of `services.app:build_app` | {' | '.join(sections)} | meaning |",
              "|---|" + "---|" * len(sections) + "---|",
              f"| `device` | `{defaults.device}` (all) |{' |' * (len(sections) - 1)} "
              f"{RaydioAppArgs.model_fields['device'].description} |"]
    keys = dict(_leaves(DeploymentArgs))
    keys.update(dict(_leaves(BatchingArgs, "batching.")))
    keys["seed"] = DigitsArgs.model_fields["seed"].description
    keys.update({k: d for k, d in _leaves(JobsArgs) if k not in keys})
    for key, description in keys.items():
        cells = []
        for section in sections:
            try:
                cells.append(f"`{_lookup(getattr(defaults, section), key)}`")
            except AttributeError:
                cells.append("")
        lines.append(f"| `<deployment>.{key}` | {' | '.join(cells)} | {description} |")
    for section, model in (("limits", LimitsArgs), ("auth", AuthArgs), ("mcp", McpArgs)):
        lines += ["", f"| `args.ingress.{section}.*` | default | meaning |", "|---|---|---|"]
        for key, description in _leaves(model):
            default = _lookup(getattr(defaults.ingress, section), key)
            default = ", ".join(default) if isinstance(default, tuple) else default
            lines.append(f"| `{key}` | `{default}` | {description} |")
    return "\n".join(lines) + "\n"
