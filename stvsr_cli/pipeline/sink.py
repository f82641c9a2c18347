"""A background stage: items handled in order by one worker thread, through a bounded queue.

The run loop hands each output frame to the encoder through one of these, so that the model (on
the GPU, or on other CPU cores) never waits for x264; the bound keeps memory flat when the encoder
is the slower side. An exception in the worker surfaces in the caller at its next ``put`` or at
``close``; ``abort`` drops what is queued (Ctrl-C).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

_DONE = object()


class ThreadedSink:
    def __init__(self, handle: Callable[[Any], None], *, maxsize: int = 16, name: str = "stvsr-encode") -> None:
        self._handle = handle
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE or self._stop.is_set():
                return
            try:
                self._handle(item)
            except BaseException as exc:  # handed to the caller
                self._error = exc
                self._stop.set()
                return

    def put(self, item: Any) -> None:
        """Queue ``item``; blocks while the queue is full; raises the worker's error if it failed."""
        while True:
            self._raise_error()
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Wait until every queued item is handled; raise the worker's error, if any."""
        if self._thread.is_alive():
            self.put(_DONE)
            self._thread.join()
        self._raise_error()

    def abort(self) -> None:
        """Stop without handling what is still queued."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            try:
                self._queue.put_nowait(_DONE)
            except queue.Full:
                pass
            self._thread.join(timeout=0.05)

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


class InlineSink:
    """``ThreadedSink``'s interface, handling each item at once in the caller's thread: the plain
    baseline that benchmarks measure the threaded encoder against."""

    def __init__(self, handle: Callable[[Any], None]) -> None:
        self._handle = handle

    def put(self, item: Any) -> None:
        self._handle(item)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass
