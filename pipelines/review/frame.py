"""Review stage: the frame, i.e. every scored window (or event) a review sample is drawn from.

The windows of one or more scoring runs (`gunshot batch --output DIR`, local or gs://) are read with
the report's DuckDB reader (`pipelines.report.tables.ReportTables`), each with its group (a regex over
`source`, else the top folder, as the report groups) and its UTC day (when the recording had a
timestamp). A window scored in two runs is kept once (the first run's). Rows are sorted by
(source, start_seconds), so the same runs give the same frame and, with the same seed, the same sample.

    frame = read_frame(["runs/siteA"], staging="tmp/", group_pattern=None, min_score=0.0)
    frame.scores                     # float64 [n]

With `items="events"` the frame is the runs' events instead (what a user is shown as detections:
runs of above-threshold windows, or frames for a frame-pooling head), each scored by its peak
score. Raising the threshold to t keeps (parts of) exactly the events whose peak is >= t, so a
precision estimated over events scores what `gunshot evaluate-events` counts as false alarms; the
threshold can then only be raised above the run's own.
"""

from __future__ import annotations

import dataclasses
import tempfile

import numpy as np

from gunshot_core.errors import GunshotError

NO_DAY = ""
#: What a review item is: a scored window, or an event (a detection) of the run.
ITEM_KINDS = ("windows", "events")


class ReviewInputError(GunshotError):
    """A review input (scoring run, review folder, verdicts file) is missing or malformed."""


@dataclasses.dataclass(frozen=True)
class Frame:
    """Windows offered for review, sorted by (source, start_seconds).

    Attributes:
      sources: object [n] the recording (`source` key of the scoring tables).
      starts, ends: float64 [n] seconds from the recording's start.
      scores: float64 [n].
      groups: object [n] group name.
      days: object [n] 'YYYY-MM-DD' (UTC) of the window's start, or '' without a timestamp.
      thresholds: float64 [n] the threshold the run detected with.
    """

    sources: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    scores: np.ndarray
    groups: np.ndarray
    days: np.ndarray
    thresholds: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.size)

    def keys(self) -> list[tuple[str, float]]:
        """(source, start_seconds rounded to ms) of every window: how verdicts are matched to it."""
        return [(s, round(float(t), 3)) for s, t in zip(self.sources, self.starts, strict=True)]


def read_frame(
    runs: list[str],
    *,
    group_pattern: str | None = None,
    min_score: float = 0.0,
    staging: str | None = None,
    memory_limit: str = "1GB",
    items: str = "windows",
) -> Frame:
    """Reads the windows (or events) of scoring runs with score >= min_score.

    Args:
      runs: run folders (local or gs://).
      group_pattern: regex over `source` (first group or whole match), else the top folder.
      min_score: windows below it are not offered (and not counted by estimates from the sample).
      staging: local folder for copies of gs:// runs (default: a temporary folder).
      items: "windows" (score = the window's) or "events" (score = the event's peak score).
    Raises:
      ReviewInputError: a run folder that is missing or holds no scoring tables, or no windows at all.
    """
    from pipelines.report.tables import ReportTables, RunInput

    if items not in ITEM_KINDS:
        raise ValueError(f"items must be one of {ITEM_KINDS}, got {items!r}")
    score = "score" if items == "windows" else "peak_score"
    with tempfile.TemporaryDirectory(prefix="gunshot-review-") as temporary:
        try:
            tables = ReportTables(
                [RunInput(f"run{i}", uri) for i, uri in enumerate(runs)],
                staging=staging or temporary,
                memory_limit=memory_limit,
            )
        except FileNotFoundError as e:
            raise ReviewInputError(f"{e}; pass the --output folder of `gunshot batch`") from e
        try:
            parts = []
            for i in range(len(runs)):
                group = tables.group_expression(i, group_pattern)
                parts.append(
                    f"""SELECT {i} AS run, source, start_seconds, end_seconds, CAST({score} AS DOUBLE) AS score,
                               {group} AS grp,
                               coalesce(strftime(start_utc, '%Y-%m-%d'), '{NO_DAY}') AS day, threshold
                        FROM r{i}_{items} WHERE {score} >= {float(min_score)!r}"""
                )
            table = tables.con.sql(
                f"""SELECT source, start_seconds, end_seconds, score, grp, day, threshold FROM (
                        SELECT *, row_number() OVER (PARTITION BY source, start_seconds ORDER BY run) AS k
                        FROM ({" UNION ALL ".join(parts)}))
                    WHERE k = 1 ORDER BY source, start_seconds"""
            ).to_arrow_table()
        finally:
            tables.close()
    if table.num_rows == 0:
        raise ReviewInputError(
            f"no {items} with score >= {min_score} in {', '.join(runs)}; lower --min_score or check the runs"
        )
    column = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    return Frame(
        sources=column["source"].astype(object),
        starts=column["start_seconds"].astype(np.float64),
        ends=column["end_seconds"].astype(np.float64),
        scores=column["score"].astype(np.float64),
        groups=column["grp"].astype(object),
        days=column["day"].astype(object),
        thresholds=column["threshold"].astype(np.float64),
    )
