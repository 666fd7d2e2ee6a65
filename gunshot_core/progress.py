"""Progress of a known number of items on stderr, readable both on a terminal and in a log file.

On a terminal the line is a bar redrawn in place (at most ten times a second). Anywhere else (a log
file, CI, a pipe) a redrawn line would be one line per item, so only a few plain lines are written:
one at least every `every_seconds` while the work goes on (if it has moved by a tenth since the last
line) and the final one.

    progress = Progress(len(items), "clips and figures")
    for item in items:
        ...
        progress.advance()
"""

from __future__ import annotations

import sys
import time

BAR_WIDTH = 30
#: Seconds between the plain lines written when stderr is not a terminal.
PLAIN_EVERY_SECONDS = 10.0


class Progress:
    """A progress bar for `total` items; `advance()` after each.

    Args:
      total: items to do.
      label: what is done, e.g. "clips and figures".
      stream: where to write (default sys.stderr); a terminal gets the redrawn bar.
      every_seconds: without a terminal, the least time between two plain lines (the last line is
        always written).
    """

    def __init__(self, total: int, label: str, stream=None, *, every_seconds: float = PLAIN_EVERY_SECONDS):
        self.total = total
        self.label = label
        self.done = 0
        self._stream = stream or sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", None) and self._stream.isatty())
        self._every = every_seconds
        self._started = time.monotonic()
        self._last_time = self._started if not self._tty else -1.0
        self._last_done = 0

    def advance(self, n: int = 1) -> None:
        """Marks `n` more items done and writes the line if it is due."""
        self.done += n
        now = time.monotonic()
        final = self.done >= self.total
        if self._tty:
            due = final or now - self._last_time >= 0.1
        else:
            moved = self.done - self._last_done >= max(1, self.total / 10)
            due = final or (moved and now - self._last_time >= self._every)
        if not due:
            return
        self._last_time, self._last_done = now, self.done
        filled = (BAR_WIDTH * self.done) // max(1, self.total)
        line = (
            f"{self.label}: [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.done}/{self.total}"
            f" {now - self._started:.1f} s"
        )
        self._stream.write(("\r" + line + ("\n" if final else "")) if self._tty else line + "\n")
        self._stream.flush()
