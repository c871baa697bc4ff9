"""One cancel token, from Ctrl-C (or SIGTERM, or a failed phase) to every wait of a run.

A ``CancelToken`` is set once (``cancel()``) and seen everywhere something waits: the retry
engine's backoff (``sleep`` wakes at once), the slots that bound connections (``acquire``,
``holding``), every read that brings bytes (``check``), the run's own queues, the commit
between batches. What is waiting raises ``Cancelled`` there; nothing polls a flag in a
loop of its own.

**Carried by the Config.** The token is a field of ``Config`` (``Config.cancel``), not an
argument threaded through every call: the Config already reaches every layer that waits
(the API client keeps it, the transfer's ``Lanes`` read it, the run builds its workers from
it), so each wait finds the token where its settings are, and no signature between the
layers had to grow. A Config made with ``Config()`` or ``Config.from_env()`` gets a fresh
token; ``with_()`` keeps it, so every copy of the CLI's Config shares the token its signal
handlers set.

**Scoped by children.** A run must be able to stop its own workers (a phase raised)
without cancelling the caller's client for good: ``child()`` is a token that is cancelled
with its parent, and may be cancelled alone. ``mirror.run`` and ``ohpub.open`` work under a
child of the client's token (``ApiClient.scoped``); the CLI's signal handlers cancel the
root. ``signum`` tells a cancellation by a signal (the CLI's exit 130 or 143) from one by
a failure.

**Shielded sections.** The CLI's signal handler also raises ``KeyboardInterrupt`` in the
main thread (so that a blocking call there ends too), except inside ``shielded()``: a
state transaction, or the few milliseconds in which the commit renames a batch into place
and records it, which must not be cut in half. The token is cancelled all the same, and
the interrupt is raised as the section ends.

``DaemonPool`` is the thread pool of the waits above: its threads are daemons, so a worker
stuck in a read the token cannot reach (a stalled server, until its timeout) never holds
the process up after the run has let go of it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator

TYPE_CHECKING = False  # the entry point imports this module first: typing would cost it time
if TYPE_CHECKING:
    from concurrent.futures import Future  # imported where a pool is made, too
    from typing import Any, Protocol, TypeVar

    T = TypeVar("T")

    class _Lock(Protocol):
        def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...
        def release(self) -> None: ...


POLL = 0.05
"""Seconds between looks at the token while blocked on a lock that cannot be woken."""


class Cancelled(KeyboardInterrupt):
    """Raised at a blocking point once its token is cancelled.

    A ``KeyboardInterrupt`` because that is what it means to the caller who asked for it
    (Ctrl-C, SIGTERM, ``token.cancel()``): ``except Exception`` does not swallow it, and
    everything that already treats Ctrl-C as "stop, keep what is done" treats it the same.
    A run that cancels its own workers because a phase failed raises that failure, never
    ``Cancelled``.
    """

    def __init__(self, signum: int | None = None) -> None:
        super().__init__("cancelled" if signum is None else f"signal {signum}")
        self.signum = signum


class CancelToken:
    """Set once, seen by every wait; thread-safe. See the module docstring."""

    def __init__(self, parent: CancelToken | None = None) -> None:
        self._event = threading.Event()
        self._signum: int | None = None
        self._parent = parent
        self._children: weakref.WeakSet[CancelToken] = weakref.WeakSet()
        self._lock = threading.Lock()
        if parent is not None:
            with parent._lock:
                parent._children.add(self)
            if parent.cancelled:
                self.cancel(parent.signum)

    def child(self) -> CancelToken:
        """A token cancelled with this one, that can also be cancelled on its own."""
        return CancelToken(self)

    def cancel(self, signum: int | None = None) -> None:
        """Cancel this token and its children (idempotent; the first signal is kept)."""
        with self._lock:
            if self._signum is None:
                self._signum = signum
            self._event.set()
            children = list(self._children)
        for c in children:
            c.cancel(signum)

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    @property
    def signum(self) -> int | None:
        """The signal that cancelled the token (or an ancestor), if one did."""
        return self._signum

    def check(self) -> None:
        """Raise ``Cancelled`` if the token is cancelled."""
        if self._event.is_set():
            raise Cancelled(self._signum)

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or raise ``Cancelled`` as soon as the token is cancelled."""
        if self._event.wait(max(0.0, seconds)):
            raise Cancelled(self._signum)

    def acquire(self, lock: _Lock) -> None:
        """Acquire ``lock`` (a lock or a semaphore), or raise ``Cancelled`` while waiting."""
        while not lock.acquire(timeout=POLL):
            self.check()
        if self._event.is_set():
            lock.release()
            raise Cancelled(self._signum)

    @contextlib.contextmanager
    def holding(self, lock: Any) -> Iterator[None]:
        """``with lock:`` that gives up when the token is cancelled (any context manager
        that is not a lock is simply entered)."""
        if not hasattr(lock, "acquire"):
            with lock:
                yield
            return
        self.acquire(lock)
        try:
            yield
        finally:
            lock.release()

    def get(self, q: queue.Queue[T] | queue.SimpleQueue[T]) -> T:
        """The next item of ``q``, waiting until one comes or the token is cancelled."""
        while True:
            try:
                return q.get(timeout=POLL)
            except queue.Empty:
                self.check()

    def result(self, fut: Future[T]) -> T:
        """``fut.result()``, waiting until it is done or the token is cancelled (the call
        behind it goes on: a ``DaemonPool`` thread does not hold the process up)."""
        from concurrent.futures import wait

        while not wait([fut], timeout=POLL).done:
            self.check()
        return fut.result()


# -- shielded sections ---------------------------------------------------------------------------

_shield = threading.local()


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """A section a signal handler must not cut with ``KeyboardInterrupt``: a state
    transaction, a batch being placed. The handler still cancels the token; the interrupt
    it held back is raised as the (outermost) section ends, unless the section raised."""
    depth = getattr(_shield, "depth", 0)
    _shield.depth = depth + 1
    deferred = False
    try:
        yield
    finally:
        _shield.depth = depth
        if depth == 0:
            deferred, _shield.deferred = getattr(_shield, "deferred", False), False
    if deferred:
        raise KeyboardInterrupt


def interrupt_now() -> bool:
    """The signal handler's question: True to raise ``KeyboardInterrupt`` at once; inside
    ``shielded()`` False, and the interrupt is raised as the section ends."""
    if getattr(_shield, "depth", 0):
        _shield.deferred = True
        return False
    return True


# -- a pool of daemon threads ---------------------------------------------------------------------


class DaemonPool:
    """Up to ``workers`` daemon threads running submitted calls; ``submit`` returns a
    ``concurrent.futures.Future``.

    Unlike ``ThreadPoolExecutor``, whose threads the interpreter joins at exit, a thread
    blocked in a read nobody can interrupt does not hold the process up once its run is
    over; and ``shutdown(wait=seconds)`` waits a bounded time.
    """

    def __init__(self, workers: int, name: str) -> None:
        self._max = max(1, workers)
        self._name = name
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        from concurrent.futures import Future

        fut: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("submit after shutdown")
            self._work.put((fut, lambda: fn(*args)))
            if len(self._threads) < self._max:
                t = threading.Thread(
                    target=self._run, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(t)
                t.start()
        return fut

    def _run(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            fut, call = item
            if fut.set_running_or_notify_cancel():
                try:
                    result = call()
                except BaseException as exc:  # noqa: BLE001 - handed to the future
                    fut.set_exception(exc)
                else:
                    fut.set_result(result)
            del fut, call, item

    def shutdown(self, *, wait: float | None = None, cancel_futures: bool = True) -> bool:
        """No more work; with ``cancel_futures`` the queued calls are dropped. Waits up to
        ``wait`` seconds for the running calls (None: until they end); True when every
        thread has ended."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in threads:
            self._work.put(None)
        deadline = None if wait is None else time.monotonic() + wait
        for t in threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)


__all__ = ["Cancelled", "CancelToken", "DaemonPool", "shielded", "interrupt_now"]
