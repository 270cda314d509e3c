"""Dynamic batching: the rows of concurrent callers gathered into one backend call.

    backend = DynamicBatcher(TransformersBackend(loaded), max_batch_rows=16, max_wait_ms=10)
    judge = Judge(backend)   # call judge.judge(...) from many threads: their rows share `generate` calls

A call waits at most `max_wait_ms` for company, then goes with every waiting
call that has the same generation settings, up to `max_batch_rows` rows (a call
is never split: its rows, both orders of a pair, stay in one batch). Each
caller gets its own outputs back, in its own order. A caller that cancels
before its batch starts is dropped from the queue; one that cancels during it
gets no outputs, and the others are not disturbed. If a gathered batch fails
(out of memory, an input the processor refuses), each call in it is retried on
its own, so that only the call at fault fails. Streams are not batched: they go
to the backend as they come.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from .errors import RRMError
from .generation import BackendUnavailable, GenerationSettings, Output, Progress
from .inputs import Row
from .media import MediaLimits


@dataclass
class _Call:
    rows: Sequence[Row]
    settings: GenerationSettings
    limits: MediaLimits
    cancel: threading.Event | None
    done: threading.Event = field(default_factory=threading.Event)
    outputs: list[Output] | None = None
    error: BaseException | None = None

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def key(self):
        return (repr(self.settings), repr(self.limits))


@dataclass
class BatchStats:
    calls: int = 0  # backend calls made
    rows: int = 0  # rows they carried
    largest: int = 0  # rows in the largest one


class DynamicBatcher:
    """A backend that gathers the rows of concurrent `generate` calls into one call of the backend it wraps."""

    def __init__(self, backend, max_batch_rows: int = 16, max_wait_ms: float = 10.0):
        if max_batch_rows < 1:
            raise RRMError("--max-batch-rows must be at least 1")
        self.inner, self.max_batch_rows, self.max_wait_s = backend, max_batch_rows, max_wait_ms / 1000
        self.stats = BatchStats()
        self._queue: list[_Call] = []
        self._wake = threading.Condition()
        threading.Thread(target=self._serve, name="rrm-batcher", daemon=True).start()

    # The wrapped backend's description, prompt record and tokenizer are this one's.
    def __getattr__(self, name):
        return getattr(self.inner, name)

    def info(self) -> dict:
        return {**self.inner.info(), "batching": {"max_batch_rows": self.max_batch_rows,
                                                  "max_wait_ms": self.max_wait_s * 1000}}

    @property
    def waiting(self) -> int:
        with self._wake:
            return len(self._queue)

    def generate(self, rows: Sequence[Row], settings: GenerationSettings, limits: MediaLimits,
                 cancel: threading.Event | None = None) -> list[Output]:
        call = _Call(rows, settings, limits, cancel)
        with self._wake:
            self._queue.append(call)
            self._wake.notify()
        while not call.done.wait(0.05):
            if call.cancelled and self._drop(call):
                raise RRMError("generation was cancelled")
        if call.error is not None:
            raise call.error
        if call.outputs is None:
            raise RRMError("generation was cancelled")
        return call.outputs

    def stream(self, rows: Sequence[Row], settings: GenerationSettings, limits: MediaLimits,
               cancel: threading.Event | None = None) -> Iterator[Progress]:
        return self.inner.stream(rows, settings, limits, cancel)

    # ------------------------------------------------------------------ the worker

    def _drop(self, call: _Call) -> bool:
        """Take a cancelled call off the queue; False when its batch has already started."""
        with self._wake:
            if call in self._queue:
                self._queue.remove(call)
                return True
            return False

    def _gather(self) -> list[_Call]:
        """The next batch: the oldest call, and those that join it before the wait ends or the batch is full."""
        with self._wake:
            while True:
                while not self._queue:
                    self._wake.wait()
                first = self._queue[0]
                deadline = time.monotonic() + self.max_wait_s
                while first in self._queue:  # a caller may cancel, and leave, while we wait
                    batch = self._fitting(first)
                    left = deadline - time.monotonic()
                    if sum(len(c.rows) for c in batch) >= self.max_batch_rows or left <= 0:
                        for c in batch:
                            self._queue.remove(c)
                        return batch
                    self._wake.wait(left)

    def _fitting(self, first: _Call) -> list[_Call]:
        batch, size = [first], len(first.rows)
        for c in self._queue[1:]:
            if c.key() == first.key() and size + len(c.rows) <= self.max_batch_rows:
                batch.append(c)
                size += len(c.rows)
        return batch

    def _serve(self) -> None:
        while True:
            batch = [c for c in self._gather() if not c.cancelled]
            if batch:
                self._run(batch)

    def _run(self, batch: list[_Call]) -> None:
        rows = [r for c in batch for r in c.rows]
        first = batch[0]
        try:
            outputs = self.inner.generate(rows, first.settings, first.limits, _AllCancelled(batch))
        except BackendUnavailable as e:
            return self._finish(batch, error=e)
        except Exception as e:
            if len(batch) == 1:
                return self._finish(batch, error=e)
            for c in batch:  # only the call at fault fails
                self._run([c])
            return
        self.stats.calls += 1
        self.stats.rows += len(rows)
        self.stats.largest = max(self.stats.largest, len(rows))
        start = 0
        for c in batch:
            c.outputs = None if c.cancelled else outputs[start:start + len(c.rows)]
            start += len(c.rows)
            c.done.set()

    @staticmethod
    def _finish(batch: list[_Call], error: BaseException) -> None:
        for c in batch:
            c.error = error
            c.done.set()


class _AllCancelled:
    """Set when every call of a batch has cancelled: the backend may stop (an event-like view)."""

    def __init__(self, batch: list[_Call]):
        self.batch = batch

    def is_set(self) -> bool:
        return all(c.cancelled for c in self.batch)

    def set(self) -> None:  # a backend sets its cancel event when it finishes a stream
        pass


__all__ = ["DynamicBatcher", "BatchStats"]
