"""The model catalogue as the faces see it: look a model up by name for a purpose, list what each kind offers."""

from __future__ import annotations

from collections.abc import Sequence

from services.config import ModelArgs, ModelEntry, TorchScriptModelArgs
from services.errors import ModelNotFound

# What a client can do with each kind; the route or tool that fails names the models that can serve it.
PURPOSES = {
    "sentence-embedding": "embeddings",
    "text-generation": "chat completions",
    "torchscript": "tensor inference",
}


class Catalogue:
    def __init__(self, models: Sequence[ModelEntry]) -> None:
        self.entries: dict[str, ModelEntry] = {model.name: model for model in models}

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def of_kind(self, kind: str) -> list[ModelEntry]:
        return [model for model in self.entries.values() if model.kind == kind]

    def default(self, kind: str) -> str | None:
        """The first entry of a kind: what a request that names no model gets."""
        models = self.of_kind(kind)
        return models[0].name if models else None

    def get(self, name: str) -> ModelEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise ModelNotFound(f"Unknown model {name!r}. Models: {', '.join(self.entries)}.", "model") from None

    def require(self, name: str | None, kind: str, param: str = "model") -> ModelEntry:
        """The entry called ``name`` (or the kind's default) if it is of ``kind``; else a 404 naming those that are."""
        can = [model.name for model in self.of_kind(kind)]
        if name is None and can:
            return self.entries[can[0]]
        model = self.entries.get(name)
        if model is None or model.kind != kind:
            problem = "is unknown" if model is None else f"is a {model.kind} model"
            serving = f"Models for {PURPOSES[kind]}: {', '.join(can)}." if can else f"No model serves {PURPOSES[kind]}."
            raise ModelNotFound(f"Model {name!r} {problem}. {serving}", param)
        return model

    def classifier(self, name: str | None) -> TorchScriptModelArgs:
        """A tensor model with labels (for classify routes and tools)."""
        can = [m.name for m in self.of_kind("torchscript") if m.labels]
        model = self.entries.get(name) if name is not None else (self.entries[can[0]] if can else None)
        if model is None or model.name not in can:
            raise ModelNotFound(f"Model {name!r} is not a classifier. Classifiers: {', '.join(can) or 'none'}.", "model")
        return model


def describe(model: ModelArgs) -> str:
    return model.description or f"{model.kind} model from {model.identity}"


def faces(model: ModelEntry) -> list[str]:
    """Where clients reach a model: REST and V2 routes, MCP tools and its UI."""
    if model.kind == "sentence-embedding":
        return [f"POST /v1/embeddings (model={model.name})", f"/v2/models/{model.name}", "MCP embed, rank_by_similarity",
                "/ui/embeddings/"]
    if model.kind == "text-generation":
        return [f"POST /v1/chat/completions (model={model.name})", "MCP chat", "/ui/chat/"]
    routes = [f"POST /v1/models/{model.name}:predict", f"/v2/models/{model.name}", "MCP predict"]
    if getattr(model, "labels", ()):
        routes += [f"POST /v1/{model.name}/classify", "MCP classify"]
    if getattr(model, "image", None) is not None:
        routes += [f"POST /v1/{model.name}/classify-image", "MCP classify_image"]
    return [*routes, f"/ui/{model.name}/"]
