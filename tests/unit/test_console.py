"""`make run`'s console: which lines reach it, what goes to the log file, and the hook into Ray it relies on.

The sample lines are copied from a real `make run` (Ray 2.60, Serve, raydio's JSON logs).
"""

from __future__ import annotations

import inspect
import io
import logging
import os
from pathlib import Path

import pytest

from services import console
from services.cli import _ready_banner
from services.config import Settings

WARNING = ("WARNING 2026-12-03 16:22:11,296 controller 6907 -- Deployment 'embedder' in application 'raydio' has 1 replicas "
           "that have taken more than 30s to be scheduled. This may be due to waiting for the cluster to auto-scale")
SLOW_START = ("WARNING 2026-12-03 16:09:58,494 controller 6907 -- Deployment 'chat' in application 'raydio' has 1 replicas "
              "that have taken more than 30s to initialize.")
CONTINUED = "This may be caused by a slow __init__ or reconfigure method."
INFO = "INFO 2026-12-03 16:09:28,300 controller 6907 -- Deploying new version of Deployment(name='embedder', app='raydio')."
JSON_INFO = '{"ts": "2026-12-03T16:10:15.357Z", "level": "INFO", "logger": "services.ingress.observability", "message": "GET /health/ready 200"}'
JSON_ERROR = '{"ts": "2026-12-03T16:10:15.357Z", "level": "ERROR", "logger": "services.ingress.errors", "message": "unhandled error"}'
DRIVER_WARNING = "2026-12-03 16:09:07,456\tWARNING authentication_token_setup.py:85 -- Token authentication is enabled for this Ray cluster."
GLOG_ERROR = "[2026-12-03 16:09:07,456 E 7068 7101] core_worker.cc:512: Failed to register worker to Raylet."
PROGRESS = "Loading weights: 100%|██████████| 272/272 [00:00<00:00, 3077.57it/s]"
RAYLET = "Task ServeController.graceful_shutdown failed. There are infinite retries remaining, so the task will be retried. Error: The actor is dead"
PY_WARNING = "/app/services/models/chat.py:40: UserWarning: the tokenizer has no chat template"


@pytest.mark.parametrize(("line", "notable"), [
    (WARNING, True), (CONTINUED, False), (INFO, False), (JSON_INFO, False), (JSON_ERROR, True), (DRIVER_WARNING, False),
    (GLOG_ERROR, True), (PROGRESS, False), (RAYLET, False), (PY_WARNING, True),
    (SLOW_START, False), (DRIVER_WARNING.replace("Token authentication is enabled", "Something else happened"), True),
    ("Traceback (most recent call last):", True),
])
def test_warnings_and_errors_are_told_from_the_rest(line, notable):
    assert console.is_notable(line) is notable


def test_continuation_lines_do_not_start_a_record():
    assert all(console.starts_record(line) for line in (WARNING, INFO, JSON_INFO, DRIVER_WARNING, GLOG_ERROR))
    assert not any(console.starts_record(line) for line in (CONTINUED, PROGRESS, '  File "x.py", line 1, in <module>', "ValueError: bad"))


@pytest.fixture
def file_log(tmp_path):
    handler = logging.FileHandler(tmp_path / "run.log", encoding="utf-8")
    handler.setFormatter(console._FileFormatter(console.FILE_FORMAT))
    yield handler, tmp_path / "run.log"
    handler.close()


def test_worker_lines_all_go_to_the_file_and_only_warnings_with_their_tracebacks_to_the_console(file_log):
    handler, path = file_log
    screen = io.StringIO()
    router = console.WorkerLogRouter(handler, screen)
    controller = {"pid": 6907, "is_err": True, "actor_name": "ServeController"}
    router({**controller, "lines": [INFO, WARNING]})
    router({**controller, "lines": [CONTINUED, INFO]})  # the warning continues into the next batch
    router({**controller, "lines": [SLOW_START, CONTINUED]})  # expected while models load: the file only
    replica = {"pid": 7068, "is_err": True, "actor_name": "ServeReplica:raydio:chat"}
    router({**replica, "lines": [PROGRESS, JSON_INFO, "Traceback (most recent call last):", '  File "chat.py", line 3, in load',
                                 "RuntimeError: out of memory", JSON_INFO]})
    router({"pid": "raylet", "is_err": False, "lines": [RAYLET]})

    shown = screen.getvalue().splitlines()
    assert shown == [
        f"(ServeController pid=6907) {WARNING}",
        f"(ServeController pid=6907) {CONTINUED}",
        "(ServeReplica:raydio:chat pid=7068) Traceback (most recent call last):",
        '(ServeReplica:raydio:chat pid=7068)   File "chat.py", line 3, in load',
        "(ServeReplica:raydio:chat pid=7068) RuntimeError: out of memory",
    ]
    written = path.read_text().splitlines()
    assert len(written) == 13  # every line, verbatim with its process
    assert written[0] == f"(ServeController pid=6907) {INFO}" and written[-1] == f"(raylet) {RAYLET}"


def test_each_run_gets_a_new_file_and_old_ones_are_pruned(tmp_path):
    first = console.new_log_file(tmp_path, keep=3)
    assert first.exists() and first.parent == tmp_path / "logs" and first.name.startswith("raydio-")
    first.write_text("run 1")
    for run in range(2, 6):  # several runs within one second still get a file each
        made = console.new_log_file(tmp_path, keep=3)
        assert made.read_text() == ""
        made.write_text(f"run {run}")
    kept = sorted(p.read_text() for p in (tmp_path / "logs").glob("raydio-2*.log"))
    assert kept == ["run 3", "run 4", "run 5"]
    assert (tmp_path / "logs" / "raydio-latest.log").read_text() == "run 5"


@pytest.fixture
def restore_logging():
    names = ("", "services", "ray", "ray.serve")
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level, logging.getLogger(name).propagate)
             for name in names}
    yield
    for name, (handlers, level, propagate) in saved.items():
        named = logging.getLogger(name)
        for handler in named.handlers[:]:
            named.removeHandler(handler)
            if handler not in handlers:
                handler.close()
        for handler in handlers:
            named.addHandler(handler)
        named.setLevel(level)
        named.propagate = propagate


@pytest.mark.parametrize("verbose", [False, True])
def test_driver_logs_go_to_the_file_and_progress_and_warnings_to_the_console(tmp_path, restore_logging, verbose):
    screen = io.StringIO()
    path = tmp_path / "run.log"
    console.configure_run_logging(path, "INFO", verbose=verbose, console=screen)
    logging.getLogger("services.models.digits").info("trained digits CNN: test accuracy 0.99")
    logging.getLogger("ray.serve").info('Started Serve in namespace "serve".')
    logging.getLogger("alembic.runtime.migration").info("Running upgrade  -> 0001")
    logging.getLogger("ray._private.authentication").warning("Token authentication is enabled for this Ray cluster.")
    logging.getLogger("ray._private.node").warning("Ray's object store is on a small /dev/shm")
    shown = screen.getvalue()
    assert "raydio: trained digits CNN: test accuracy 0.99" in shown
    assert "WARNING ray._private.node: Ray's object store is on a small /dev/shm" in shown
    assert ("Token authentication" in shown) is verbose  # expected on every start: the file only
    assert ("Started Serve" in shown) is verbose and ("Running upgrade" in shown) is verbose
    written = path.read_text()
    for message in ("trained digits CNN", "Started Serve", "Running upgrade", "Token authentication"):
        assert message in written


def test_ray_still_has_the_worker_output_hook_this_relies_on(tmp_path, file_log):
    """``ray.init`` registers "ray_print_logs" on this dispatcher; quiet mode swaps it for the file."""
    import ray._private.worker
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    assert '"ray_print_logs"' in inspect.getsource(ray._private.worker)
    printed = []
    dispatcher.add_handler("ray_print_logs", printed.append)  # what ray.init does, without starting Ray
    handler, path = file_log
    try:
        assert console.route_ray_worker_logs(handler, verbose=False)
        dispatcher.emit({"pid": 1234, "is_err": True, "actor_name": "ServeReplica:raydio:digits", "lines": [INFO]})
    finally:
        dispatcher.remove_handler("ray_print_logs")
        dispatcher.remove_handler("raydio_run_log")
    assert printed == []
    assert path.read_text() == f"(ServeReplica:raydio:digits pid=1234) {INFO}\n"


def test_the_banner_says_how_long_it_took_and_where_the_logs_are():
    text = _ready_banner(24.4, 3.2, Path("configs/serve/local.yaml"), Path("/home/u/.cache/raydio/logs/raydio-1.log"), False)
    first, second = text.splitlines()
    assert first.startswith("raydio is ready in 24 s (models 3 s, Ray and Serve 21 s;")
    assert "/home/u/.cache/raydio/logs/raydio-1.log" in second and "RAYDIO_LOG_LEVEL=DEBUG" in second


def test_the_log_level_is_read_in_any_case(monkeypatch):
    monkeypatch.setenv("RAYDIO_LOG_LEVEL", "debug")
    assert Settings().log_level == "DEBUG"
    monkeypatch.setenv("RAYDIO_LOG_LEVEL", os.environ["RAYDIO_LOG_LEVEL"].capitalize())
    assert Settings().log_level == "DEBUG"


def test_ctrl_c_while_waiting_for_the_replicas_stops_the_wait():
    import threading

    from services.runner import wait_ready

    stop = threading.Event()
    stop.set()  # what the SIGINT handler of `run` does
    with pytest.raises(InterruptedError):
        wait_ready("http://127.0.0.1:9", timeout_s=60, stop=stop)
