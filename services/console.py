"""The console of `make run`: progress, the banner, warnings and errors; every other log line goes to a file.

Ray streams each worker's stdout and stderr (Serve's controller and proxy, every replica) to the driver, which
prints them: hundreds of lines around the banner. Here one file per run gets every line
(``<RAYDIO_CACHE_DIR>/logs/raydio-<time>.log``, newest also as ``raydio-latest.log``) and the console gets only
warnings and errors, with the lines that continue them (a traceback). Verbose (``RAYDIO_LOG_LEVEL=DEBUG`` or
``run --verbose``) prints everything live as well, as Ray does by default.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

logger = logging.getLogger(__name__)

FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
KEEP_LOGS = 20

# A line that starts a new log record: Ray's and Serve's formats ("INFO 2026-...", "2026-... WARNING ..."),
# glog from Ray's C++ processes ("[2026-... W 12 34] ..."), raydio's JSON lines.
_RECORD = re.compile(r'^(?:\[|\{"|(?:DEBUG|INFO|WARN(?:ING)?|ERROR|CRITICAL|FATAL)\b|\d{4}-\d\d-\d\d[ T])')
# A record worth the console: warnings and errors in any of those formats, Python warnings and tracebacks.
_NOTABLE = re.compile(
    r'^(?:WARN(?:ING)?|ERROR|CRITICAL|FATAL)\b'
    r'|^\d{4}-\d\d-\d\d[ T][\d:,.]+\s+(?:WARN(?:ING)?|ERROR|CRITICAL|FATAL)\b'
    r'|^\[[^\]]* [WEF] \d+ \d+\]'
    r'|"level": "(?:WARNING|ERROR|CRITICAL)"'
    r'|^\S+:\d+: \w*Warning: '
    r'|^Traceback \(most recent call last\):'
)

# Warnings that are expected on every start and leave a user nothing to do; they stay in the file. Serve warns
# while a replica loads its model for over 30 s (wait_ready fails loudly if one never does; "taken more than 30s
# to be scheduled", a lack of resources, still shows), and Ray 2.60 notes that token authentication is on.
_EXPECTED = re.compile(r"replicas that have taken more than \d+s to initialize|Token authentication is enabled for this Ray cluster")


def is_notable(line: str) -> bool:
    """Whether a log line is a warning or an error (or a traceback) in one of the formats Ray's processes use."""
    return bool(_NOTABLE.search(line)) and not _EXPECTED.search(line)


def starts_record(line: str) -> bool:
    """Whether a line starts a new record, as opposed to continuing the previous one (a traceback, a wrapped message)."""
    return bool(_RECORD.match(line))


def new_log_file(cache_dir: Path, keep: int = KEEP_LOGS) -> Path:
    """A new file under ``cache_dir/logs`` for this run; keeps the newest ``keep`` and points raydio-latest.log at it."""
    logs = cache_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = logs / f"raydio-{stamp}.log"
    for n in range(2, 100):  # two runs in one second
        if not path.exists():
            break
        path = logs / f"raydio-{stamp}-{n}.log"
    path.touch()
    for old in sorted(logs.glob("raydio-2*.log"), key=lambda p: p.stat().st_mtime)[:-keep]:
        old.unlink(missing_ok=True)
    latest = logs / "raydio-latest.log"
    with contextlib.suppress(OSError):
        latest.unlink(missing_ok=True)
        latest.symlink_to(path.name)
    return path


class _FileFormatter(logging.Formatter):
    """Log records as usual; lines from Ray's workers verbatim (they carry their own time and level)."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "verbatim", False):
            return record.getMessage()
        return super().format(record)


class _ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.levelno < logging.WARNING:
            return f"raydio: {record.getMessage()}"
        return f"{record.levelname} {record.name}: {super().format(record)}"


def _console_record(verbose: bool):
    def keep(record: logging.LogRecord) -> bool:
        # raydio's own INFO lines are its progress (training, converting); any library's warnings and errors.
        if verbose:
            return True
        if record.levelno >= logging.WARNING:
            return not _EXPECTED.search(record.getMessage())
        return record.name.startswith("services") and record.levelno >= logging.INFO

    return keep


def configure_run_logging(path: Path, level: str, verbose: bool, console: TextIO | None = None) -> logging.Handler:
    """Send this process's logs to ``path`` (at ``level``) and only progress and warnings to the console.

    Also takes over the handlers Ray and Serve install on their loggers when imported. Returns the file handler,
    which :func:`route_ray_worker_logs` shares.
    """
    import ray.serve  # noqa: F401 - importing Serve installs its console handler; replaced below

    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(_FileFormatter(FILE_FORMAT))
    file_handler.setLevel(level)
    console_handler = logging.StreamHandler(console or sys.stderr)
    console_handler.setFormatter(_ConsoleFormatter("%(message)s"))
    console_handler.addFilter(_console_record(verbose))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(file_handler)
    root.addHandler(console_handler)
    root.setLevel(level)
    for name in ("services", "ray", "ray.serve"):
        named = logging.getLogger(name)
        for handler in list(named.handlers):
            named.removeHandler(handler)
        named.propagate = True
    logging.getLogger("services").setLevel(level)
    return file_handler


def _prefix(data: dict[str, Any]) -> str:
    pid = data.get("pid")
    if pid in ("raylet", "autoscaler"):
        return f"({pid}) "
    name = data.get("actor_name") or data.get("task_name")
    return f"({name} pid={pid}) " if name else f"(pid={pid}) "


class WorkerLogRouter:
    """A handler for Ray's stream of worker output: every line to the file, warnings and errors to the console.

    ``data`` is one batch from one process: ``{"pid", "is_err", "lines", "actor_name", "task_name", ...}``.
    A line that continues a record (a traceback's frames) goes where the record's first line went.
    """

    def __init__(self, file_handler: logging.Handler, console: TextIO | None) -> None:
        self._file = file_handler
        self._console = console
        self._showing: dict[tuple[Any, Any], bool] = {}

    def __call__(self, data: dict[str, Any]) -> None:
        prefix = _prefix(data)
        key = (data.get("pid"), data.get("is_err"))
        showing = self._showing.get(key, False)
        shown: list[str] = []
        for line in data.get("lines", ()):
            self._file.handle(logging.makeLogRecord({"msg": prefix + line, "verbatim": True, "levelno": logging.INFO,
                                                     "levelname": "INFO", "name": "ray.worker"}))
            if is_notable(line):
                showing = True
            elif starts_record(line):
                showing = False
            if showing:
                shown.append(prefix + line)
        self._showing[key] = showing
        if shown and self._console is not None:
            self._console.write("\n".join(shown) + "\n")
            self._console.flush()


def route_ray_worker_logs(file_handler: logging.Handler, verbose: bool) -> bool:
    """After ``ray.init``: the workers' lines go to the file; the console keeps warnings and errors (all, if verbose).

    Swaps the handler ``ray.init`` registers on Ray's worker-output dispatcher (a private API; the unit tests
    check it still exists). Returns False, leaving Ray's printing as it is, when that API is gone.
    """
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        logger.warning("Ray's worker logs print here: this Ray has no worker-output dispatcher to route them to the log file")
        return False
    if not verbose:
        dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("raydio_run_log", WorkerLogRouter(file_handler, None if verbose else sys.stderr))
    return True
