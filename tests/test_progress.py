"""Quiet output: progress that degrades to a few lines without a terminal; tf.Transform's advice hidden."""

import io
import logging

from gunshot_core import logs, progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _run(total, stream, monkeypatch, seconds_per_item=0.0, **kwargs):
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    bar = progress.Progress(total, "clips and figures", stream, **kwargs)
    for _ in range(total):
        clock[0] += seconds_per_item
        bar.advance()
    return stream.getvalue()


def test_without_a_terminal_a_quick_run_writes_one_line(monkeypatch):
    for total in (9, 200):  # 9 event pages used to print 9 lines
        text = _run(total, io.StringIO(), monkeypatch, seconds_per_item=0.01)
        assert text.splitlines() == [f"clips and figures: [{'#' * 30}] {total}/{total} {total * 0.01:.1f} s"]


def test_without_a_terminal_a_long_run_writes_a_line_every_ten_seconds_and_tenth(monkeypatch):
    text = _run(300, io.StringIO(), monkeypatch, seconds_per_item=1.0)  # 300 s: 10 tenths
    lines = text.splitlines()
    assert 9 <= len(lines) <= 11 and lines[-1].endswith("300/300 300.0 s") and "\r" not in text
    slow_start = _run(100, io.StringIO(), monkeypatch, seconds_per_item=0.2)  # 20 s, a line per 10 s
    assert [line.split()[-2] for line in slow_start.splitlines()] == ["10.2", "20.0"]  # at 10 s, and the last


def test_on_a_terminal_the_bar_is_redrawn_in_place(monkeypatch):
    text = _run(50, _Terminal(), monkeypatch, seconds_per_item=0.5)
    assert text.count("\r") == 50 and text.endswith("50/50 25.0 s\n") and text.count("\n") == 1


def test_tf_transform_format_advice_is_hidden_unless_verbose():
    message = (
        "You are passing instance dicts and DatasetMetadata to TFT which will not provide optimal "
        "performance. Consider following the TFT guide to upgrade to the TFXIO format"
    )
    record = logging.LogRecord("absl", logging.WARNING, __file__, 1, message, None, None)
    assert not logs._QuietFilter().filter(record)
    real = logging.LogRecord("absl", logging.WARNING, __file__, 1, "a real warning", None, None)
    assert logs._QuietFilter().filter(real)
