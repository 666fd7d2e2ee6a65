"""Unit tests of pipelines.scoring.decode_ahead: order, errors, the byte budget, the gate and closing."""

import threading
import time

import numpy as np
import pytest

from pipelines.scoring import decode_ahead as da


def _consume(ahead, producers):
    """Drives a Lookahead as DecodeFn does: offer each producer, consuming while the slot is taken."""
    out = []
    for producer in producers:
        while not ahead.offer(producer):
            out.extend(ahead.step())
        out.extend(ahead.ready())
    out.extend(ahead.drain())
    return out


def _lookahead(limit=1 << 20, gate=None):
    return da.Lookahead(
        budget=da.ProcessBudget(limit), gate=gate, size_of=lambda item: getattr(item, "nbytes", 0)
    )


def test_items_keep_producer_and_item_order():
    ahead = _lookahead()
    producers = [lambda i=i: (f"{i}-{j}" for j in range(i % 4)) for i in range(30)]
    try:
        assert _consume(ahead, producers) == [f"{i}-{j}" for i in range(30) for j in range(i % 4)]
    finally:
        ahead.close()


def test_producer_error_is_raised_in_order_and_stops_the_thread():
    def failing():
        yield "a"
        raise ValueError("bad recording")

    ahead = _lookahead()
    got = []
    with pytest.raises(ValueError, match="bad recording"):
        for producer in (lambda: iter(["x"]), failing, lambda: iter(["never"])):
            while not ahead.offer(producer):
                got.extend(ahead.step())
        got.extend(ahead.drain())
    ahead.close()
    assert got == ["x", "a"]


def test_budget_bounds_the_bytes_decoded_ahead():
    produced = []

    def chunks():
        for i in range(50):
            produced.append(i)
            yield np.zeros(1000, np.uint8)  # 1000 bytes each

    budget = da.ProcessBudget(5000)
    ahead = da.Lookahead(budget=budget, size_of=lambda item: item.nbytes)
    try:
        assert ahead.offer(chunks)
        deadline = time.monotonic() + 5
        while not ahead.stalled and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ahead.stalled
        assert 5 <= len(produced) <= 6 and budget.used_bytes <= 5000
        assert len(list(ahead.drain())) == 50
        assert budget.used_bytes == 0
    finally:
        ahead.close()


def test_an_item_larger_than_the_budget_still_passes():
    ahead = da.Lookahead(budget=da.ProcessBudget(10), size_of=lambda item: item.nbytes)
    try:
        assert ahead.offer(lambda: iter([np.zeros(100, np.uint8), np.zeros(100, np.uint8)]))
        assert [x.nbytes for x in ahead.drain()] == [100, 100]
    finally:
        ahead.close()


def test_decoding_holds_back_while_a_forward_pass_runs_unless_the_consumer_waits():
    gate = da.ComputeGate()
    produced = []

    def items():
        for i in range(3):
            produced.append(i)
            yield i

    ahead = _lookahead(gate=gate)
    try:
        with gate.busy():
            assert ahead.offer(items)
            time.sleep(0.3)
            assert produced == []  # nothing decoded beside the forward pass
            assert ahead.step() == [0]  # ...until the consumer asks for an item
        assert list(ahead.drain()) == [1, 2]
    finally:
        ahead.close()


def test_a_forward_pass_waits_for_the_decode_step_in_flight():
    gate = da.ComputeGate()
    step_started, release = threading.Event(), threading.Event()
    order = []

    def slow():
        step_started.set()
        release.wait(5)
        order.append("step done")
        yield "chunk"

    ahead = _lookahead(gate=gate)
    try:
        assert ahead.offer(slow)
        assert step_started.wait(5)
        threading.Timer(0.05, release.set).start()
        with gate.busy():
            order.append("forward")
        assert order == ["step done", "forward"]
        assert list(ahead.drain()) == ["chunk"]
    finally:
        ahead.close()


def test_close_stops_a_blocked_decoder_and_returns_its_bytes():
    budget = da.ProcessBudget(1000)
    closed = []

    def endless():
        try:
            while True:
                yield np.zeros(600, np.uint8)
        finally:
            closed.append(True)  # the producer's cleanup runs when the look-ahead closes

    ahead = da.Lookahead(budget=budget, size_of=lambda item: item.nbytes)
    assert ahead.offer(endless)
    deadline = time.monotonic() + 5
    while not ahead.stalled and time.monotonic() < deadline:
        time.sleep(0.01)
    ahead.close()
    assert closed == [True] and budget.used_bytes == 0


def test_offer_waits_for_the_previous_producer_to_start():
    gate = da.ComputeGate()
    ahead = _lookahead(gate=gate)
    try:
        with gate.busy():  # the decoder starts producers, but takes no step
            assert ahead.offer(lambda: iter([1]))
            assert ahead.wait_for_slot(5)
            assert ahead.offer(lambda: iter([2]))
            assert not ahead.offer(lambda: iter([3]))  # the second has not started: not claimed
        assert _consume(ahead, [lambda: iter([3])]) == [1, 2, 3]
    finally:
        ahead.close()


def test_none_is_an_item_like_any_other():
    ahead = _lookahead()
    try:
        assert _consume(ahead, [lambda: iter([None, 0, None])]) == [None, 0, None]
    finally:
        ahead.close()
