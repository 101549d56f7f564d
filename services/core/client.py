"""The typed client over the model deployments (the role KServe's ``RayModel`` plays).

The core's services, and through them every face and the job runner, call ``ModelClient``; it calls the
deployments' handles with a timeout, records a span and a metric per call, and turns Ray's failures into domain
errors that say which model failed and whether to retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from services.core.catalogue import Catalogue
from services.core.coalescing import Coalescer
from services.errors import InvalidInput, ModelNotFound, ModelTimeout, ModelUnavailable, NotFound, RaydioError
from services.telemetry import tracing
from services.telemetry.metrics import ingress_metrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelStatus:
    name: str
    ready: bool
    info: dict[str, Any]
    error: str | None = None


def _translate(name: str, exc: BaseException) -> BaseException:
    """Map what a handle call raised to the error the client should see."""
    from ray import exceptions as ray_exc
    from ray.serve import exceptions as serve_exc

    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray_exc.RayTaskError) and isinstance(cause, RaydioError):
        return cause  # a domain error raised in the replica, unwrapped
    if isinstance(exc, RaydioError):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return ModelTimeout(f"The {name} model did not answer in time. Try again, or ask for less work.")
    if isinstance(exc, serve_exc.BackPressureError):
        retry_after_s = max(1, round(exc.retry_after_s or 1))
        return ModelUnavailable(f"The {name} model is at capacity (its queue is full). Retry shortly.",
                                retry_after_s=retry_after_s)
    if isinstance(exc, (ray_exc.RayActorError, serve_exc.DeploymentUnavailableError, ray_exc.ActorUnavailableError)):
        return ModelUnavailable(f"The {name} model replica is unavailable (restarting or failed). Retry shortly.", retry_after_s=2)
    if isinstance(exc, ray_exc.RayTaskError):
        return _replica_failed(name, exc)
    return exc


def _replica_failed(name: str, exc: BaseException) -> ModelUnavailable:
    """An unexpected error in the replica: logged here with its traceback, a 503 for the client."""
    logger.error("the %s replica raised while handling a request", name, exc_info=exc)
    return ModelUnavailable(f"The {name} model failed while handling the request.", retry_after_s=1)


def _unpacked(name: str, result: Any) -> Any:
    """One request's share of a coalesced call: its answer, or its own error as the client should see it."""
    if isinstance(result, BaseException) and not isinstance(result, RaydioError):
        return _replica_failed(name, result)
    return result


def _outcome(exc: BaseException | None, translated: BaseException | None) -> str:
    """A bounded label for how a handle call ended."""
    from ray.serve.exceptions import BackPressureError

    if exc is None:
        return "ok"
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return "cancelled"
    if isinstance(exc, BackPressureError):
        return "rejected"
    for error_type, outcome in ((InvalidInput, "invalid"), (ModelTimeout, "timeout"), (ModelUnavailable, "unavailable")):
        if isinstance(translated, error_type):
            return outcome
    return "error"


class _ObservedCall:
    """The handle span (CLIENT) and the metrics of one call; ``carrier`` takes the span into the replica.

    The span is never made current: a stream is consumed from more than one task, and nothing runs
    under it in this process anyway.
    """

    def __init__(self, name: str, method: str) -> None:
        self.name, self.method = name, method
        self.started = time.perf_counter()
        self.span = tracing.tracer().start_span(f"{name}.{method} call", kind=SpanKind.CLIENT,
                                                attributes={"raydio.model": name, "raydio.method": method})
        self.carrier = tracing.inject(trace.set_span_in_context(self.span))

    def failed(self, exc: BaseException) -> BaseException:
        """Record a call that raised; returns what the caller should raise (``exc`` itself, or its translation)."""
        translated = _translate(self.name, exc)
        self.finish(exc, translated)
        return translated

    def finish(self, exc: BaseException | None = None, translated: BaseException | None = None) -> None:
        outcome = _outcome(exc, translated)
        if outcome not in ("ok", "cancelled"):
            tracing.record_error(self.span, translated or exc)
        self.span.set_attribute("raydio.outcome", outcome)
        self.span.end()
        ingress_metrics().observe_model_call(self.name, self.method, outcome, time.perf_counter() - self.started)


# How long a call waits for a replica to take it once a replica of that model was seen to die, until a call succeeds
# again. Serve queues a request for a deployment with no live replica until a replacement starts (tens of seconds,
# a model load); clients are better served by a quick 503 and Retry-After.
WAIT_FOR_REPLICA_AFTER_LOSS_S = 2.0
REPLICA_LOST = "replica_lost"


def _is_replica_loss(exc: BaseException) -> bool:
    from ray import exceptions as ray_exc

    return isinstance(exc, (ray_exc.RayActorError, ray_exc.ActorUnavailableError))


class ModelClient:
    """Calls the model deployments. ``handles`` maps catalogue names to ``DeploymentHandle``s."""

    def __init__(self, catalogue: Catalogue, handles: dict[str, Any], timeout_s: float = 120.0,
                 services: dict[str, Any] | None = None, remotes: dict[str, Any] | None = None) -> None:
        self.catalogue = catalogue
        self._coalescers: dict[str, Coalescer] = {}
        self.handles = handles  # the models, by catalogue name
        self.services = services or {}  # other deployments that readiness covers (the job runner)
        self.remotes = remotes or {}  # remote Gradio backends: listed, but their outages do not make us unready
        self.timeout_s = timeout_s
        self._lost: dict[str, asyncio.Event] = {}  # set while a lost replica of the model has not been replaced

    def _loss(self, name: str) -> asyncio.Event:
        return self._lost.setdefault(name, asyncio.Event())

    def _observe(self, name: str, exc: BaseException | None) -> None:
        if exc is None:
            self._loss(name).clear()
        elif _is_replica_loss(exc):
            self._loss(name).set()

    async def _assigned(self, name: str, response) -> None:
        """Wait until a replica takes the call. While a replica of the model is known lost (and the calls to it
        queue for its replacement), wait only briefly, then refuse with ModelUnavailable instead of queueing."""
        fetch = getattr(response, "_fetch_future_result_async", None)  # Serve's wait for assignment
        if fetch is None:
            return  # not a Serve handle (tests' local handles)
        assign = asyncio.ensure_future(fetch())
        loss = self._loss(name)
        try:
            if not loss.is_set():
                lost = asyncio.ensure_future(loss.wait())
                try:
                    await asyncio.wait({assign, lost}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    lost.cancel()
            if not assign.done():  # lost meanwhile, or before: a short wait, in case the replacement is up already
                await asyncio.wait({assign}, timeout=WAIT_FOR_REPLICA_AFTER_LOSS_S)
        except asyncio.CancelledError:
            assign.cancel()
            raise
        if not assign.done():
            assign.cancel()
            raise ModelUnavailable(f"The {name} model has no live replica (one was lost and is being replaced). "
                                   "Retry shortly.", retry_after_s=2)
        assign.result()  # raises what assignment raised (back-pressure)

    async def _result(self, name: str, response):
        await self._assigned(name, response)
        return await response

    @property
    def names(self) -> list[str]:
        return list(self.handles)

    def _handle(self, name: str):
        try:
            return self.handles.get(name) or self.services.get(name) or self.remotes[name]
        except KeyError:
            raise ModelNotFound(f"Unknown model {name!r}. Available models: {', '.join(self.handles)}.", "model") from None

    async def _invoke(self, handle, name: str, method: str, args: tuple, timeout_s: float | None = None, **kwargs):
        """One handle call; raises what it raised, untranslated."""
        response = getattr(handle, method).remote(*args, **kwargs)
        try:
            result = await asyncio.wait_for(self._result(name, response), timeout_s or self.timeout_s)
        except BaseException as exc:
            self._observe(name, exc)
            if isinstance(exc, (asyncio.CancelledError, TimeoutError, ModelUnavailable)):
                # Nobody will read the answer (the client went away, or we stopped waiting): stop the replica's work.
                # Serve does not cancel a handle call when its caller is cancelled, outside direct ingress.
                response.cancel()
            raise
        self._observe(name, None)
        return result

    async def _observed(self, name: str, method: str, work) -> Any:
        """Await ``work(carrier)`` under the call's span and metrics; Ray's failures come out as domain errors."""
        call = _ObservedCall(name, method)
        try:
            result = await work(call.carrier)
        except BaseException as exc:  # noqa: BLE001 - translated and re-raised
            translated = call.failed(exc)
            if translated is exc:
                raise
            raise translated from exc
        call.finish()
        return result

    async def _call(self, name: str, method: str, *args, timeout_s: float | None = None):
        handle = self._handle(name)
        return await self._observed(name, method, lambda carrier: self._invoke(
            handle, name, method, args, timeout_s, trace_carrier=carrier))

    def _coalescer(self, name: str, in_flight: int, max_inputs: int) -> Coalescer:
        coalescer = self._coalescers.get(name)
        if coalescer is None:
            handle = self._handle(name)

            async def send(items: list) -> list:
                results = await self._invoke(handle, name, "embed_many", (items,))
                return [_unpacked(name, result) for result in results]

            coalescer = self._coalescers[name] = Coalescer(send, in_flight, max_inputs)
        return coalescer

    async def status(self, name: str, timeout_s: float = 5.0) -> ModelStatus:
        try:
            return ModelStatus(name, True, await self._call(name, "info", timeout_s=timeout_s))
        except ModelNotFound:
            raise
        except Exception as exc:  # noqa: BLE001 - readiness reports, never raises
            return ModelStatus(name, False, {}, str(exc) or type(exc).__name__)

    async def statuses(self, include_services: bool = False) -> list[ModelStatus]:
        names = [*self.handles, *(self.services if include_services else ())]
        return list(await asyncio.gather(*(self.status(name) for name in names)))

    async def remote_statuses(self) -> list[ModelStatus]:
        return list(await asyncio.gather(*(self.status(name) for name in self.remotes)))

    async def call_remote(self, name: str, inputs: list) -> Any:
        if name not in self.remotes:
            raise NotFound(f"No remote backend named {name!r}. Configured: {', '.join(self.remotes) or 'none'}.", "name")
        return await self._call(name, "predict", inputs)

    async def embed(self, model: str, texts: list[str]) -> dict:
        """``{"vectors", "tokens"}`` for a sentence-embedding model. Concurrent requests of up to the model's
        ``max_batch_size`` strings go to the replica together (``coalescing``); a longer one goes alone."""
        self._handle(model)  # an unknown model: ModelNotFound before anything else
        entry = self.catalogue.get(model)
        if not entry.coalesce_calls or len(texts) > entry.batching.max_batch_size:
            return await self._call(model, "embed", texts)
        coalescer = self._coalescer(model, entry.coalesce_calls, entry.batching.max_batch_size)
        return await self._observed(model, "embed", lambda carrier: asyncio.wait_for(
            coalescer.submit((texts, carrier), len(texts)), self.timeout_s))

    async def predict(self, model: str, inputs: dict) -> dict:
        """Output arrays by name for a tensor model; ``inputs`` are arrays by input name."""
        return await self._call(model, "predict", inputs)

    async def predict_image(self, model: str, data: bytes) -> dict:
        """``{"input", "outputs"}`` for a tensor model that takes images."""
        return await self._call(model, "predict_image", data)

    async def generate(self, model: str, messages: list[dict], params: dict) -> AsyncIterator[dict]:
        """Stream chunks from a text-generation deployment; errors before the first chunk surface on the first
        ``__anext__``."""
        handle = self._handle(model)
        call = _ObservedCall(model, "generate")
        stream = handle.options(stream=True).generate.remote(messages, params, trace_carrier=call.carrier)
        iterator = stream.__aiter__()
        try:
            await asyncio.wait_for(self._assigned(model, stream), self.timeout_s)
            while True:
                try:
                    chunk = await asyncio.wait_for(iterator.__anext__(), self.timeout_s)
                except StopAsyncIteration:
                    break
                yield chunk
        except BaseException as exc:  # noqa: BLE001 - translated and re-raised
            self._observe(model, exc)
            if isinstance(exc, (GeneratorExit, asyncio.CancelledError)):
                call.finish(exc)
                stream.cancel()
                raise
            if isinstance(exc, (TimeoutError, ModelUnavailable)):
                stream.cancel()  # we stop reading: the replica stops generating
            translated = call.failed(exc)
            if translated is exc:
                raise
            raise translated from exc
        self._observe(model, None)
        call.finish()
