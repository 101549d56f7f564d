"""Concurrent calls to one model, merged into fewer handle calls.

Every handle call costs CPU on both sides (Serve's router, the actor call, the replica's request wrapper): on a
small machine more than the forward pass of a sentence. A ``Coalescer`` keeps at most ``in_flight`` calls out;
requests that arrive while they are all out wait and leave together in the next one, up to ``max_inputs`` inputs.
A lone request leaves at once, so coalescing adds no wait at low load and forms groups in step with the load.
Each request still gets its own answer or its own error, and a request whose caller went away is dropped (its
group's call is cancelled when nobody in it still waits).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

Send = Callable[[list[Any]], Awaitable[list[Any]]]  # the items of a group → one result (or exception) per item


class _Waiter:
    __slots__ = ("item", "size", "future", "group")

    def __init__(self, item: Any, size: int, future: asyncio.Future) -> None:
        self.item, self.size, self.future = item, size, future
        self.group: _Group | None = None


class _Group:
    __slots__ = ("waiters", "task")

    def __init__(self, waiters: list[_Waiter]) -> None:
        self.waiters = waiters
        self.task: asyncio.Task | None = None

    def abandoned(self) -> bool:
        return all(waiter.future.done() for waiter in self.waiters)


class Coalescer:
    def __init__(self, send: Send, in_flight: int = 2, max_inputs: int = 32) -> None:
        if in_flight < 1 or max_inputs < 1:
            raise ValueError("in_flight and max_inputs must be at least 1")
        self._send = send
        self.in_flight, self.max_inputs = in_flight, max_inputs
        self._pending: deque[_Waiter] = deque()
        self._senders = 0
        self.calls = 0  # handle calls made, and the items they carried: the mean group is items / calls
        self.items = 0

    async def submit(self, item: Any, size: int = 1) -> Any:
        """``item`` (of ``size`` inputs) through a group call; returns its result or raises its error."""
        waiter = _Waiter(item, size, asyncio.get_running_loop().create_future())
        self._pending.append(waiter)
        if self._senders < self.in_flight:
            self._senders += 1
            asyncio.get_running_loop().create_task(self._drain())
        try:
            return await waiter.future
        except asyncio.CancelledError:
            waiter.future.cancel()
            if waiter.group is None:
                self._pending.remove(waiter)
            elif waiter.group.abandoned() and waiter.group.task is not None:
                waiter.group.task.cancel()  # nobody waits for this call any more: the replica stops its work
            raise

    def _next_group(self) -> _Group:
        waiters, inputs = [], 0
        while self._pending and (not waiters or inputs + self._pending[0].size <= self.max_inputs):
            waiter = self._pending.popleft()
            waiters.append(waiter)
            inputs += waiter.size
        group = _Group(waiters)
        for waiter in waiters:
            waiter.group = group
        return group

    async def _drain(self) -> None:
        try:
            while self._pending:
                group = self._next_group()
                self.calls += 1
                self.items += len(group.waiters)
                group.task = asyncio.ensure_future(self._send([waiter.item for waiter in group.waiters]))
                try:
                    results = await asyncio.shield(group.task)
                    if len(results) != len(group.waiters):
                        raise RuntimeError(f"Got {len(results)} answers for a call of {len(group.waiters)} requests.")
                except asyncio.CancelledError:
                    if not group.task.cancelled():
                        raise  # this sender itself was cancelled (the loop is closing)
                    continue  # every waiter of the group went away
                except Exception as exc:  # noqa: BLE001 - the whole call failed: every waiter gets the error
                    for waiter in group.waiters:
                        if not waiter.future.done():
                            waiter.future.set_exception(exc)
                    continue
                for waiter, result in zip(group.waiters, results, strict=True):  # lengths checked above
                    if waiter.future.done():
                        continue
                    if isinstance(result, BaseException):
                        waiter.future.set_exception(result)
                    else:
                        waiter.future.set_result(result)
        finally:
            self._senders -= 1
