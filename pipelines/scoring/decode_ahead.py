"""Decoding ahead of VGGish on a worker, in the time its cores would otherwise sit idle.

Stage: scoring 3 (decode), the look-ahead thread of `pipelines.scoring.decode.DecodeFn`.

VGGish's forward pass keeps every core of a CPU worker busy. A decoder thread running beside it
slows the pass by more than the decoding it saves: on 2 cores, 30 minutes of 44.1 kHz audio took
11.0 s with a per-recording decode thread and 10.3 s decoded serially (benchmarks/bench_score.py),
because TensorFlow's threads wait for whichever of them was preempted. Decoding is cheap (about an
eighth of the network) but it is not free, so it is best done where a core idles: while the model
loads when a worker starts, and between forward passes.

`Lookahead` runs the decoding of a DoFn's elements in one background thread, in submission order,
across elements (so a slow model load is covered by decoding several recordings, not just one), and:

- holds back while a forward pass runs in the process (`ComputeGate`), unless its consumer is
  waiting for the next item, in which case decoding it is the only useful work left;
- keeps at most `ProcessBudget` bytes decoded ahead per process (shared by every decoder thread of
  the worker process), so memory stays bounded whatever the recordings' lengths;
- accepts a new element only once the previous one has started, so a bundle's unread elements stay
  unclaimed (and splittable by the runner) until the decoder is ready for them.
"""

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator

#: Bytes of decoded items (VGGish examples: ~25.6 kB per second of audio) a worker process holds
#: ahead of the network: ~43 minutes of audio, more than a model load covers on a 2-core worker.
DEFAULT_BUDGET_BYTES = 64 << 20

_POLL_SECONDS = 0.05


class ComputeGate:
    """Process-wide state of the network: forward passes running, model loads, decode steps in flight.

    A decoder takes a step (one chunk) only while no forward pass runs, unless its consumer is waiting
    for that chunk; a forward pass that starts while steps are in flight waits up to
    `STEP_WAIT_SECONDS` for them to finish, rather than share the cores with them.
    """

    #: Longest a forward pass waits for decode steps in flight (a step is one ~20-40 ms chunk).
    STEP_WAIT_SECONDS = 0.1

    def __init__(self):
        self._cond = threading.Condition()
        self._active = 0
        self._loading = 0
        self._decoding = 0

    @contextlib.contextmanager
    def busy(self):
        """Marks the enclosed block as a CPU-heavy section (a forward pass)."""
        with self._cond:
            self._active += 1
            self._cond.wait_for(lambda: not self._decoding, self.STEP_WAIT_SECONDS)
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if not self._active:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def decode_step(self, urgent: Callable[[], bool], stop: threading.Event):
        """Waits until no forward pass runs (or `urgent()`), then marks the block as a decode step.

        Yields False (and marks nothing) when `stop` was set while waiting.
        """
        with self._cond:
            while self._active and not urgent():
                if stop.is_set():
                    yield False
                    return
                self._cond.wait(_POLL_SECONDS)
            self._decoding += 1
        try:
            yield True
        finally:
            with self._cond:
                self._decoding -= 1
                self._cond.notify_all()

    def load_started(self) -> None:
        """A model load began (the network cannot run yet, so decoding ahead is free)."""
        with self._cond:
            self._loading += 1

    def load_finished(self) -> None:
        with self._cond:
            self._loading -= 1
            self._cond.notify_all()

    def is_loading(self) -> bool:
        return self._loading > 0


class ProcessBudget:
    """A byte budget shared by the decoder threads of one process.

    A holder with nothing held may always take one item, however large, so no decoder can be
    starved by the others (the budget is then briefly exceeded by at most one item per decoder).
    """

    def __init__(self, limit_bytes: int):
        if limit_bytes <= 0:
            raise ValueError(f"limit_bytes must be positive, got {limit_bytes}")
        self.limit_bytes = limit_bytes
        self._cond = threading.Condition()
        self._used = 0

    @property
    def used_bytes(self) -> int:
        return self._used

    def acquire(
        self, nbytes: int, held_by_caller: Callable[[], int], stop: threading.Event, stalled: threading.Event
    ) -> bool:
        """Takes `nbytes`, waiting while over the limit (with `stalled` set); False if `stop` was set.

        `held_by_caller()` gives the bytes the caller holds now (it falls as its items are consumed).
        """
        with self._cond:
            while held_by_caller() and self._used + nbytes > self.limit_bytes:
                if stop.is_set():
                    return False
                stalled.set()
                self._cond.wait(_POLL_SECONDS)
            stalled.clear()
            self._used += nbytes
            return True

    def release(self, nbytes: int) -> None:
        if nbytes:
            with self._cond:
                self._used -= nbytes
                self._cond.notify_all()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()  # marks the end of one producer's items
_STOPPING = object()  # the decoder was told to stop
_NOTHING = object()  # no item is ready (or no producer is outstanding)


class Lookahead:
    """Runs producers (callables returning iterables of items) in order in one background thread.

    Usage from a DoFn (all on the bundle's thread):

        while not ahead.offer(producer):        # the previous producer has not started yet
            if gate.is_loading() and not ahead.stalled:
                ahead.wait_for_slot(0.05)       # keep feeding the decoder while the model loads
            else:
                yield from map(handle, ahead.step())  # or consume (waiting) until it has
        yield from map(handle, ahead.ready())   # whatever else is decoded already
        ...
        for item in ahead.drain(): ...          # in finish_bundle: everything left, in order

    Items come out in the order the producers were offered and each producer yielded them. An
    exception raised by a producer is re-raised at its place in that order; the thread then stops.
    """

    def __init__(
        self,
        *,
        budget: ProcessBudget,
        gate: ComputeGate | None = None,
        size_of: Callable[[object], int] = lambda item: 0,
        name: str = "decode-ahead",
    ):
        self._budget = budget
        self._gate = gate
        self._size_of = size_of
        self._pending: queue.Queue = queue.Queue(maxsize=1)  # producers not started yet
        self._items: queue.Queue = queue.Queue()  # (item, nbytes), in order
        self._held = 0  # bytes of this lookahead's items in `_items`
        self._held_lock = threading.Lock()
        self._outstanding = 0  # producers offered and not yet fully consumed
        self._consumer_waiting = threading.Event()
        self._slot_free = threading.Event()
        self._slot_free.set()
        self._stalled = threading.Event()  # the decoder waits for budget: only consuming frees it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- consumer side (the bundle's thread) --------------------------------------------------------

    def offer(self, producer: Callable[[], Iterable]) -> bool:
        """Queues `producer` if the previous one has started; returns whether it was queued."""
        try:
            self._pending.put_nowait(producer)
        except queue.Full:
            return False
        self._slot_free.clear()
        self._outstanding += 1
        return True

    def wait_for_slot(self, timeout: float) -> bool:
        """Waits up to `timeout` seconds for the decoder to start the queued producer."""
        return self._slot_free.wait(timeout)

    @property
    def stalled(self) -> bool:
        """Whether the decoder waits for budget, which only consuming items frees."""
        return self._stalled.is_set()

    def step(self) -> list:
        """Waits for the decoder's next step: [item], or [] at the end of a producer (or when no
        producer is outstanding)."""
        if not self._outstanding:
            return []
        item = self._take(block=True)
        return [] if item is _END else [item]

    def ready(self) -> Iterator:
        """The items decoded already, without waiting."""
        while (item := self._take(block=False)) is not _NOTHING:
            if item is not _END:
                yield item

    def drain(self) -> Iterator:
        """Every remaining item of every offered producer, waiting for them, in order."""
        while self._outstanding:
            item = self._take(block=True)
            if item is not _END:
                yield item

    def close(self) -> None:
        """Stops the thread (items not consumed are dropped) and returns their bytes to the budget."""
        self._stop.set()
        self._thread.join()
        with self._held_lock:
            held, self._held = self._held, 0
        self._budget.release(held)

    def _take(self, block: bool):
        if not self._outstanding:
            return _NOTHING
        if block:
            self._consumer_waiting.set()
            try:
                item, nbytes = self._items.get()
            finally:
                self._consumer_waiting.clear()
        else:
            try:
                item, nbytes = self._items.get_nowait()
            except queue.Empty:
                return _NOTHING
        if nbytes:
            with self._held_lock:
                self._held -= nbytes
            self._budget.release(nbytes)
        if isinstance(item, _Failure):
            self._outstanding = 0
            raise item.error
        if item is _END:
            self._outstanding -= 1
        return item

    # -- decoder side -------------------------------------------------------------------------------

    def _next(self, iterator):
        """The iterator's next item, computed when the gate allows; _END at its end, _STOPPING on close."""
        if self._gate is None:
            return next(iterator, _END)
        with self._gate.decode_step(self._consumer_waiting.is_set, self._stop) as go:
            return next(iterator, _END) if go else _STOPPING

    def _put(self, item) -> bool:
        nbytes = int(self._size_of(item)) if item is not _END else 0
        if nbytes:
            if not self._budget.acquire(nbytes, lambda: self._held, self._stop, self._stalled):
                return False
            with self._held_lock:
                self._held += nbytes
        self._items.put((item, nbytes))
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                producer = self._pending.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
            self._slot_free.set()
            iterator = None
            try:
                iterator = iter(producer())
                while (item := self._next(iterator)) is not _END:
                    if item is _STOPPING or not self._put(item):
                        return  # stopping
                self._put(_END)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, in order
                self._items.put((_Failure(e), 0))
                return
            finally:
                if hasattr(iterator, "close"):
                    iterator.close()  # a generator's `with` blocks exit now, in this thread
