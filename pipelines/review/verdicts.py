"""Review stage: REVIEW_DIR/verdicts.csv, the reviewers' answers (format in docs/review.md).

One row per answer, appended in the order given: item_id, source, start_seconds, end_seconds,
verdict (yes | no | unsure), label (free text, may be empty), reviewer, answered_utc (ISO 8601,
e.g. 2026-03-01T10:15:02.123Z). A later row for the same item and reviewer supersedes the earlier
one; rows are never rewritten, so an answer once flushed is never lost. Every append takes an
exclusive `fcntl.flock` on the file, writes one whole line, flushes and fsyncs before releasing it:
two review servers (or scripts) on one folder interleave whole lines, never parts.

Rows written by people or scripts may leave item_id empty: the item is then the window
(source, start_seconds), the same key the sample's item ids are made from.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import fcntl
import io
import os

from pipelines.review.frame import ReviewInputError
from pipelines.review.sample import item_id

VERDICTS_CSV = "verdicts.csv"
VERDICT_COLUMNS = (
    "item_id",
    "source",
    "start_seconds",
    "end_seconds",
    "verdict",
    "label",
    "reviewer",
    "answered_utc",
)
VERDICTS = ("yes", "no", "unsure")
RAVEN_EXPORT = "verdicts.selections.txt"


def utc_now() -> str:
    """The current UTC time as ISO 8601 with milliseconds and a Z."""
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@contextlib.contextmanager
def _locked(path: str, mode: str):
    with open(path, mode, newline="", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX if "a" in mode else fcntl.LOCK_SH)
        try:
            yield f
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def append_verdict(review_dir: str, row: dict) -> dict:
    """Appends one answer to REVIEW_DIR/verdicts.csv under an exclusive lock, flushed and synced.

    Args:
      row: the VERDICT_COLUMNS (answered_utc defaults to now, label to '').
    Returns:
      the row as written.
    Raises:
      ValueError: a verdict outside VERDICTS or a missing source/reviewer.
    """
    row = {c: "" if row.get(c) is None else str(row[c]) for c in VERDICT_COLUMNS}
    if row["verdict"] not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {row['verdict']!r}")
    if not row["source"] or not row["reviewer"]:
        raise ValueError("a verdict needs its source and a reviewer")
    row["answered_utc"] = row["answered_utc"] or utc_now()
    # One line per answer: line breaks inside a label would still be quoted by csv, but keep it simple
    # for people reading the file.
    row["label"] = " ".join(row["label"].split())
    line = io.StringIO()
    csv.DictWriter(line, fieldnames=list(VERDICT_COLUMNS), lineterminator="\n").writerow(row)
    path = os.path.join(review_dir, VERDICTS_CSV)
    with _locked(path, "a+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            f.write(",".join(VERDICT_COLUMNS) + "\n")
        else:  # a row written by hand or a script may lack its line end
            f.seek(size - 1)
            if f.read(1) != "\n":
                f.write("\n")
        f.write(line.getvalue())
        f.flush()
        os.fsync(f.fileno())
    return row


def read_verdicts(review_dir_or_file: str) -> list[dict]:
    """Every row of a verdicts.csv (file order), with `item_id` filled in and `line` numbers.

    Raises:
      ReviewInputError: a missing column or a row with an unknown verdict or bad time (naming the line).
    """
    path = review_dir_or_file
    if os.path.isdir(path):
        path = os.path.join(path, VERDICTS_CSV)
    if not os.path.exists(path):
        return []
    with _locked(path, "r") as f:
        text = f.read()
    reader = csv.DictReader(io.StringIO(text))
    missing = [
        c for c in ("source", "start_seconds", "end_seconds", "verdict") if c not in (reader.fieldnames or [])
    ]
    if missing:
        raise ReviewInputError(f"{path}: no {', '.join(missing)} column; see docs/review.md for the format")
    rows = []
    for row in reader:
        line = reader.line_num
        if row.get("verdict") not in VERDICTS:
            raise ReviewInputError(
                f"{path}:{line}: verdict {row.get('verdict')!r} is not one of {', '.join(VERDICTS)}; fix the line"
            )
        try:
            start = float(row["start_seconds"])
            float(row["end_seconds"])
        except (TypeError, ValueError) as e:
            raise ReviewInputError(f"{path}:{line}: start/end seconds are not numbers; fix the line") from e
        row = {c: row.get(c) or "" for c in VERDICT_COLUMNS}
        row["item_id"] = row["item_id"] or item_id(row["source"], start)
        row["line"] = line
        rows.append(row)
    return rows


def latest(rows: list[dict]) -> dict:
    """{(item_id, reviewer): the last row in file order}: later answers supersede earlier ones."""
    result = {}
    for row in rows:
        result[(row["item_id"], row["reviewer"])] = row
    return result


def consensus(rows: list[dict]) -> dict:
    """{item_id: 'yes' | 'no' | 'unsure'} over reviewers' latest answers: their common answer when
    yes/no agree, 'unsure' when they disagree or only 'unsure' was answered."""
    answers: dict[str, set] = {}
    for (item, _), row in latest(rows).items():
        answers.setdefault(item, set()).add(row["verdict"])
    result = {}
    for item, given in answers.items():
        decided = given - {"unsure"}
        result[item] = decided.pop() if len(decided) == 1 else "unsure"
    return result


def raven_table(rows: list[dict]) -> str:
    """The latest answers as a Raven selection table (one selection per item and reviewer).

    Columns: Selection, View, Channel, Begin Time (s), End Time (s), Begin Path, Verdict, Annotation
    (the label, else the verdict), Reviewer, Answered (UTC), Item.
    """
    from gunshot_core import annotations

    items = sorted(
        latest(rows).values(), key=lambda r: (r["source"], float(r["start_seconds"]), r["reviewer"])
    )
    return annotations.format_selection_table(
        [
            {
                "file": r["source"],
                "start_seconds": float(r["start_seconds"]),
                "end_seconds": float(r["end_seconds"]),
                "label": r["label"] or r["verdict"],
                "Verdict": r["verdict"],
                "Reviewer": r["reviewer"],
                "Answered (UTC)": r["answered_utc"],
                "Item": r["item_id"],
            }
            for r in items
        ],
        label_column="Annotation",
        extra_columns=("Verdict", "Reviewer", "Answered (UTC)", "Item"),
    )
