"""Where a catalogue entry's model is: ``source`` strings to local paths.

- a path, absolute or relative (to the config file when the config is loaded from one, else to the working dir);
  ``file://`` is accepted as a prefix;
- ``pkg://<package>[/path]``: inside an installed Python package, found without importing it;
- ``builtin://<name>``: one of raydio's example models, made from bundled data by ``prepare`` into the cache.

Nothing here downloads: a model that is not on this machine is an error that says so.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

BUILTINS = ("digits-cnn",)  # made by services.models.digits.export_torchscript


class SourceError(ValueError):
    """The source cannot be found; the message says where it looked."""


def absolute(source: str, base_dir: Path | None) -> str:
    """A relative path made absolute against ``base_dir``; other sources unchanged."""
    if "://" in source and not source.startswith("file://"):
        return source
    path = Path(source.removeprefix("file://")).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = (base_dir / path).resolve()
    return str(path)


def builtin_path(name: str, cache_dir: Path) -> Path:
    return Path(cache_dir) / "builtin" / f"{name}.pt"


def resolve(source: str, cache_dir: Path, must_exist: bool = True) -> Path:
    """The local path of ``source``. ``builtin://`` paths may not exist yet when ``must_exist`` is False."""
    if source.startswith("pkg://"):
        package, _, inner = source.removeprefix("pkg://").partition("/")
        spec = importlib.util.find_spec(package) if package.isidentifier() else None
        if spec is None or not (spec.submodule_search_locations or spec.origin):
            raise SourceError(f"Python package {package!r} is not installed (source {source!r}).")
        root = Path(next(iter(spec.submodule_search_locations))) if spec.submodule_search_locations else Path(spec.origin).parent
        path = root / inner if inner else root
    elif source.startswith("builtin://"):
        name = source.removeprefix("builtin://")
        if name not in BUILTINS:
            raise SourceError(f"Unknown builtin model {name!r} (source {source!r}). Builtins: {', '.join(BUILTINS)}.")
        path = builtin_path(name, cache_dir)
        if not must_exist:
            return path
    elif "://" in source and not source.startswith("file://"):
        scheme = source.split("://", 1)[0]
        raise SourceError(f"Got source {source!r}. raydio loads models from this machine only: a path, pkg:// or "
                          f"builtin:// ({scheme}:// would need a download).")
    else:
        path = Path(source.removeprefix("file://")).expanduser()
    if not path.exists():
        hint = " Run `make prepare` (or `make run`, which prepares) first." if source.startswith("builtin://") else ""
        raise SourceError(f"Nothing at {path} (source {source!r}).{hint}")
    return path


def converted_dir(gguf_file: Path, cache_dir: Path) -> Path:
    """Where a GGUF file's torch checkpoint is cached (``services.models.chat.ensure_converted`` makes it)."""
    return Path(cache_dir) / "converted" / Path(gguf_file).stem.lower()


def is_converted(gguf_file: Path, cache_dir: Path) -> bool:
    """Whether ``converted_dir`` holds the checkpoint (it is renamed into place whole, config.json with it)."""
    return (converted_dir(gguf_file, cache_dir) / "config.json").exists()
