"""Annotation files: readers for Raven selection tables, Audacity labels and CSV; a Raven writer.

Pure Python (no Beam, no file system): the readers take the text of one annotation file and its
name, so callers read the bytes wherever they live (local, `gs://` via Beam `FileSystems`).

Formats (detected by `detect_format` from the name and the first line):

- **Raven selection table** (`.txt`, tab-separated, header with `Begin Time (s)` and
  `End Time (s)`). The recording is taken from `Begin Path`, else `Begin File`, else from the
  table's own name (Raven saves `<recording stem>.Table.1.selections.txt`). When `File Offset (s)`
  is present with a file column, it is the start within that file (tables over file sequences).
  A selection shown in several views (`Spectrogram 1`, `Waveform 1`) is read once. The label is
  the column named by `label_column`, else the first of `Annotation`, `Label`, `Species`,
  `Class`, `Sound Type`, `Call Type`, `Tag` (case-insensitive).
- **Audacity labels** (`.txt`, `start<TAB>end<TAB>label`, no header): the recording is the label
  file's stem; the `\\<TAB>low<TAB>high` frequency lines Audacity writes are skipped.
- **CSV** (`.csv`, header `file,start_seconds,end_seconds,label`; other columns ignored; the
  label column may be renamed with `label_column`).

Every row becomes an `Annotation` or an `AnnotationError` (`reason` one of `REASONS`); a file
that cannot be read at all gives one error with line 0. Messages are deterministic (no addresses,
no temporary paths: only the name the caller passed).

Usage::

    from gunshot_core import annotations

    parsed = annotations.parse_annotations(data, "site1/rec01.Table.1.selections.txt",
                                           label_column="Annotation")
    parsed.rows          # tuple[Annotation, ...] (recording_key, start/end seconds, label, file, line)
    parsed.errors        # tuple[AnnotationError, ...]
    parsed.recording_keys  # recordings the file covers, even when it has no rows

    matcher = annotations.RecordingMatcher(["gs://b/site1/rec01.wav", "gs://b/site2/rec01.wav"])
    matcher.match("C:\\\\data\\\\site1\\\\rec01.wav")   # -> "gs://b/site1/rec01.wav"

    text = annotations.format_selection_table(
        [{"file": "gs://b/site1/rec01.wav", "start_seconds": 3.2, "end_seconds": 4.1,
          "label": "gunshot", "Score": 0.93}],
        label_column="Annotation", extra_columns=("Score",))
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gunshot_core import params

RAVEN = "raven"
AUDACITY = "audacity"
CSV = "csv"
FORMATS = (RAVEN, AUDACITY, CSV)

RAVEN_BEGIN = "Begin Time (s)"
RAVEN_END = "End Time (s)"
RAVEN_BEGIN_FILE = "Begin File"
RAVEN_BEGIN_PATH = "Begin Path"
RAVEN_FILE_OFFSET = "File Offset (s)"
RAVEN_LABEL_CANDIDATES = ("Annotation", "Label", "Species", "Class", "Sound Type", "Call Type", "Tag")
CSV_COLUMNS = ("file", "start_seconds", "end_seconds", "label")

MALFORMED_FILE = "malformed_file"
MISSING_COLUMN = "missing_column"
MALFORMED_ROW = "malformed_row"
NON_NUMERIC = "non_numeric"
NEGATIVE_TIME = "negative_time"
END_BEFORE_START = "end_before_start"
MISSING_FILE_NAME = "missing_file_name"
SUPERSEDED = "superseded"
REASONS = (
    MALFORMED_FILE,
    MISSING_COLUMN,
    MALFORMED_ROW,
    NON_NUMERIC,
    NEGATIVE_TIME,
    END_BEFORE_START,
    MISSING_FILE_NAME,
    SUPERSEDED,
)
"""Reasons of `AnnotationError`: whole file unreadable | a required column is missing | a row
with too few fields | a time that is not a finite number | a time below 0 | end < start | a CSV or
Raven row with an empty file name | a review verdict answered again later by the same reviewer."""


@dataclasses.dataclass(frozen=True, order=True)
class Annotation:
    """One annotated event.

    Attributes:
      recording_key: the recording as the annotation names it: a path, a file name or a stem
        (match it to a source with `RecordingMatcher`).
      start_seconds: event start, seconds from the start of the recording.
      end_seconds: event end (>= start).
      label: the label text, whitespace-stripped ("" when empty).
      annotation_file: the annotation file's name as the caller passed it.
      line: 1-based line of the row in the file (the header is line 1 in Raven and CSV files).
    """

    recording_key: str
    start_seconds: float
    end_seconds: float
    label: str
    annotation_file: str
    line: int


@dataclasses.dataclass(frozen=True, order=True)
class AnnotationError:
    """A row (or, with line 0, a whole file) that could not be read; `reason` is one of `REASONS`."""

    annotation_file: str
    line: int
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class ParsedAnnotations:
    """What one annotation file holds.

    Attributes:
      format: one of `FORMATS`, or "" when the format could not be told.
      rows: the annotations, in file order.
      errors: one per bad row, or one (line 0) for a file that could not be read.
      recording_keys: sorted recordings the file covers (also those without any row: an empty
        Audacity file or Raven table says "annotated, nothing there").
    """

    format: str
    rows: tuple[Annotation, ...]
    errors: tuple[AnnotationError, ...]
    recording_keys: tuple[str, ...]


# ---- names ---------------------------------------------------------------------------------------

_RAVEN_TABLE_NAME = re.compile(r"^(?P<stem>.*?)\.Table\.\d+\.selections$", re.IGNORECASE)


def base_name(path: str) -> str:
    """The last component of a path, URL or `archive!member` source ('/' and '\\' separate)."""
    return re.split(r"[/\\!]", path)[-1]


def stem(path: str) -> str:
    """`base_name` without its last extension ("rec.01.wav" -> "rec.01")."""
    name = base_name(path)
    dot = name.rfind(".")
    return name[:dot] if dot > 0 else name


def table_recording_stem(table_name: str) -> str:
    """The recording stem a Raven table or Audacity file is named after.

    "rec01.Table.1.selections.txt" -> "rec01"; "rec01.selections.txt" -> "rec01";
    "rec01.txt" -> "rec01".
    """
    name = stem(table_name)
    m = _RAVEN_TABLE_NAME.match(name)
    if m:
        return m.group("stem")
    if name.lower().endswith(".selections"):
        return name[: -len(".selections")]
    return name


def decode_text(data: bytes | str) -> str:
    """Annotation bytes -> text: UTF-8 (with or without BOM), else Windows-1252 (Raven on Windows)."""
    if isinstance(data, str):
        return data[1:] if data.startswith("\ufeff") else data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def detect_format(name: str, text: str) -> str:
    """The format of an annotation file: `RAVEN`, `AUDACITY`, `CSV`, or "" when unknown.

    `.csv` -> CSV; otherwise a first line holding `Begin Time (s)` -> Raven; otherwise a first
    non-empty line of `number<TAB>number[<TAB>label]` (or an empty file) -> Audacity.
    """
    if name.lower().endswith(".csv"):
        return CSV
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return AUDACITY
    first = lines[0].split("\t")
    if RAVEN_BEGIN in (c.strip() for c in first):
        return RAVEN
    if len(first) >= 2 and _is_number(first[0]) and _is_number(first[1]):
        return AUDACITY
    return ""


def _is_number(text: str) -> bool:
    try:
        float(text.strip())
    except ValueError:
        return False
    return True


# ---- readers -------------------------------------------------------------------------------------


class _Rows:
    """Collects rows and errors of one file with the shared time checks."""

    def __init__(self, name: str):
        self.name = name
        self.rows: list[Annotation] = []
        self.errors: list[AnnotationError] = []
        self.keys: set[str] = set()

    def error(self, line: int, reason: str, message: str) -> None:
        self.errors.append(AnnotationError(self.name, line, reason, message))

    def add(self, line: int, key: str, start_text: str, end_text: str, label: str, offset: float = 0.0):
        key = key.strip()
        if not key:
            self.error(line, MISSING_FILE_NAME, f"{self.name}:{line}: the row names no recording")
            return
        self.keys.add(key)
        times = []
        for what, text in (("start", start_text), ("end", end_text)):
            try:
                value = float(text.strip())
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                self.error(
                    line, NON_NUMERIC, f"{self.name}:{line}: {what} time {text.strip()!r} is not a number"
                )
                return
            times.append(value)
        start, end = times[0] + offset, times[1] + offset
        if start < 0 or end < 0:
            self.error(line, NEGATIVE_TIME, f"{self.name}:{line}: negative time ({start:g} s to {end:g} s)")
            return
        if end < start:
            self.error(
                line, END_BEFORE_START, f"{self.name}:{line}: end {end:g} s is before start {start:g} s"
            )
            return
        self.rows.append(Annotation(key, start, end, label.strip(), self.name, line))

    def result(self, fmt: str) -> ParsedAnnotations:
        return ParsedAnnotations(fmt, tuple(self.rows), tuple(self.errors), tuple(sorted(self.keys)))


def _file_error(name: str, fmt: str, reason: str, message: str) -> ParsedAnnotations:
    return ParsedAnnotations(fmt, (), (AnnotationError(name, 0, reason, message),), ())


def _find_column(header: Sequence[str], wanted: str) -> int | None:
    lowered = [h.strip().lower() for h in header]
    try:
        return lowered.index(wanted.strip().lower())
    except ValueError:
        return None


def parse_raven(text: str, name: str, *, label_column: str | None = None) -> ParsedAnnotations:
    """Reads a Raven selection table (see the module docstring)."""
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        return _file_error(name, RAVEN, MALFORMED_FILE, f"{name}: empty file, no Raven header")
    header = lines[first].split("\t")
    begin, end = _find_column(header, RAVEN_BEGIN), _find_column(header, RAVEN_END)
    for column, index in ((RAVEN_BEGIN, begin), (RAVEN_END, end)):
        if index is None:
            return _file_error(name, RAVEN, MISSING_COLUMN, f"{name}: no {column!r} column in the header")
    if label_column:
        label = _find_column(header, label_column)
        if label is None:
            return _file_error(
                name,
                RAVEN,
                MISSING_COLUMN,
                f"{name}: no label column {label_column!r}; columns: {', '.join(h.strip() for h in header)}",
            )
    else:
        label = next(
            (i for i in (_find_column(header, c) for c in RAVEN_LABEL_CANDIDATES) if i is not None), None
        )
        if label is None:
            return _file_error(
                name,
                RAVEN,
                MISSING_COLUMN,
                f"{name}: no label column (tried {', '.join(RAVEN_LABEL_CANDIDATES)}); name it with "
                f"label_column; columns: {', '.join(h.strip() for h in header)}",
            )
    path_col = _find_column(header, RAVEN_BEGIN_PATH)
    file_col = _find_column(header, RAVEN_BEGIN_FILE)
    offset_col = _find_column(header, RAVEN_FILE_OFFSET)
    selection_col = _find_column(header, "Selection")
    default_key = table_recording_stem(name)
    rows = _Rows(name)
    if path_col is None and file_col is None:
        rows.keys.add(default_key)
    seen_selections: set[str] = set()
    needed = max(c for c in (begin, end, label, path_col, file_col, offset_col) if c is not None)
    for i in range(first + 1, len(lines)):
        raw = lines[i]
        if not raw.strip():
            continue
        line = i + 1
        fields = raw.split("\t")
        if len(fields) <= max(begin, end):
            rows.error(
                line, MALFORMED_ROW, f"{name}:{line}: {len(fields)} fields, the header has {len(header)}"
            )
            continue
        fields += [""] * (needed + 1 - len(fields))
        if selection_col is not None:
            selection = fields[selection_col].strip()
            if selection and selection in seen_selections:
                continue  # the same selection in another view
            seen_selections.add(selection)
        key = default_key
        from_file = False
        for col in (path_col, file_col):
            if col is not None and fields[col].strip():
                key, from_file = fields[col], True
                break
        if (path_col is not None or file_col is not None) and not from_file:
            key = ""
        start_text, end_text, offset = fields[begin], fields[end], 0.0
        if from_file and offset_col is not None and fields[offset_col].strip():
            # Begin/End Time count from the start of a file sequence; File Offset is within the file.
            try:
                offset = float(fields[offset_col]) - float(fields[begin])
            except ValueError:
                start_text = fields[offset_col]
        rows.add(line, key, start_text, end_text, fields[label], offset)
    return rows.result(RAVEN)


def parse_audacity(text: str, name: str) -> ParsedAnnotations:
    """Reads an Audacity label file; the recording is the file's stem."""
    rows = _Rows(name)
    key = table_recording_stem(name)
    rows.keys.add(key)
    for i, raw in enumerate(text.splitlines()):
        line = i + 1
        if not raw.strip() or raw.startswith("\\"):
            continue  # blank, or the frequency range of the label above
        fields = raw.split("\t")
        if len(fields) < 2:
            rows.error(line, MALFORMED_ROW, f"{name}:{line}: expected start<TAB>end<TAB>label")
            continue
        rows.add(line, key, fields[0], fields[1], "\t".join(fields[2:]))
    return rows.result(AUDACITY)


def parse_csv(text: str, name: str, *, label_column: str | None = None) -> ParsedAnnotations:
    """Reads a CSV with header `file,start_seconds,end_seconds,label` (label column renamable).

    A review's verdicts.csv (docs/review.md) reads too: its `source` column stands for `file`, and
    when the header has `reviewer` and `answered_utc`, a row answered again later by the same reviewer
    for the same window (item_id, else file and start) is an error row with reason `superseded`.
    """
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, None)
    except csv.Error as e:
        return _file_error(name, CSV, MALFORMED_FILE, f"{name}: not a CSV file ({e})")
    if header is None:
        return _file_error(name, CSV, MALFORMED_FILE, f"{name}: empty file, no CSV header")
    wanted = dict(zip(CSV_COLUMNS, CSV_COLUMNS, strict=True))
    if label_column:
        wanted["label"] = label_column
    index = {}
    for role, column in wanted.items():
        found = _find_column(header, column)
        if found is None and role == "file":  # review verdicts (docs/review.md) name it `source`
            found = _find_column(header, "source")
        if found is None:
            return _file_error(
                name,
                CSV,
                MISSING_COLUMN,
                f"{name}: no {column!r} column; the header is {','.join(h.strip() for h in header)}",
            )
        index[role] = found
    rows = _Rows(name)
    needed = max(index.values())
    kept = []
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            rows.error(reader.line_num, MALFORMED_ROW, f"{name}:{reader.line_num}: {e}")
            continue
        line = reader.line_num
        if not any(f.strip() for f in fields):
            continue
        if len(fields) <= needed:
            rows.error(
                line, MALFORMED_ROW, f"{name}:{line}: {len(fields)} fields, the header has {len(header)}"
            )
            continue
        kept.append((line, fields))
    # A review's verdicts.csv: a later answer of a reviewer for the same window supersedes the earlier.
    reviewer, item = _find_column(header, "reviewer"), _find_column(header, "item_id")
    superseded = {}
    if reviewer is not None and _find_column(header, "answered_utc") is not None:
        last = {}
        for line, fields in kept:
            who = fields[reviewer].strip() if reviewer < len(fields) else ""
            window = fields[item].strip() if item is not None and item < len(fields) else ""
            key = (window or (fields[index["file"]].strip(), fields[index["start_seconds"]].strip()), who)
            if key in last:
                superseded[last[key]] = line
            last[key] = line
    for line, fields in kept:
        if line in superseded:
            rows.error(
                line,
                SUPERSEDED,
                f"{name}:{line}: superseded by line {superseded[line]} (same window and reviewer)",
            )
            continue
        rows.add(
            line,
            fields[index["file"]],
            fields[index["start_seconds"]],
            fields[index["end_seconds"]],
            fields[index["label"]],
        )
    rows.errors.sort(key=lambda e: e.line)
    return rows.result(CSV)


def parse_annotations(
    data: bytes | str, name: str, *, label_column: str | None = None, fmt: str | None = None
) -> ParsedAnnotations:
    """Reads one annotation file of any supported format.

    Args:
      data: the file's content (bytes are decoded with `decode_text`).
      name: the file's name or path; used for the format, the Raven/Audacity recording stem and in
        every row and message.
      label_column: Raven/CSV label column (Raven default: the first of RAVEN_LABEL_CANDIDATES).
      fmt: one of `FORMATS` to skip detection.
    Returns:
      ParsedAnnotations; never raises on bad content.
    """
    text = decode_text(data)
    fmt = fmt or detect_format(name, text)
    if fmt == RAVEN:
        return parse_raven(text, name, label_column=label_column)
    if fmt == AUDACITY:
        return parse_audacity(text, name)
    if fmt == CSV:
        return parse_csv(text, name, label_column=label_column)
    first = next((line for line in text.splitlines() if line.strip()), "")
    return _file_error(
        name,
        "",
        MALFORMED_FILE,
        f"{name}: not a Raven selection table, Audacity label file or CSV (first line: {first[:60]!r})",
    )


def read_annotations(path: str, *, label_column: str | None = None) -> ParsedAnnotations:
    """`parse_annotations` of a local file (an unreadable file gives one `malformed_file` error)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return _file_error(
            path, "", MALFORMED_FILE, f"{path}: cannot read ({e.strerror or type(e).__name__})"
        )
    return parse_annotations(data, path, label_column=label_column)


# ---- matching annotations to recordings ----------------------------------------------------------


def _components(path: str) -> list[str]:
    return [c for c in re.split(r"[/\\!]", path) if c]


def _shared_parents(key_parts: list[str], source: str) -> int:
    """How many folders above the file name the key and the source share, from the bottom up."""
    parts = _components(source)
    n = 0
    while n < min(len(parts), len(key_parts)) - 1 and parts[-2 - n] == key_parts[-2 - n]:
        n += 1
    return n


class RecordingMatcher:
    """Finds the recording an annotation names, among the sources of a job.

    A key with an extension matches sources of that file name, a key without one (a Raven table or
    Audacity file stem) sources of that stem; among several, the one sharing the most trailing
    path components with the key wins ("D:\\\\site1\\\\rec.wav" picks ".../site1/rec.wav" over
    ".../site2/rec.wav"). An exact source string always wins.

    Args:
      sources: source strings as the scoring pipeline names them (paths, URLs, `archive!member`).
    """

    def __init__(self, sources: Iterable[str]):
        self._sources = sorted(set(sources))
        self._exact = set(self._sources)
        self._by_name: dict[str, list[str]] = {}
        self._by_stem: dict[str, list[str]] = {}
        for source in self._sources:
            self._by_name.setdefault(base_name(source), []).append(source)
            self._by_stem.setdefault(stem(source), []).append(source)

    def candidates(self, key: str) -> list[str]:
        """Every source the key could mean, best first (ties sorted by source)."""
        key = key.strip()
        if key in self._exact:
            return [key]
        name = base_name(key)
        pool = self._by_name.get(name) or self._by_stem.get(name, [])
        key_parts = _components(key)
        return sorted(pool, key=lambda s: (-_shared_parents(key_parts, s), s))

    def match(self, key: str) -> str | None:
        """The one source the key means, or None when there is none or the best is a tie.

        Use `candidates` to tell "missing" (empty) from "ambiguous" (several).
        """
        found = self.candidates(key)
        if not found:
            return None
        if len(found) == 1:
            return found[0]
        key_parts = _components(key)
        best, second = (_shared_parents(key_parts, s) for s in found[:2])
        return found[0] if best > second else None


# ---- writer --------------------------------------------------------------------------------------

SELECTION_TABLE_COLUMNS = (
    "Selection",
    "View",
    "Channel",
    RAVEN_BEGIN,
    RAVEN_END,
    "Low Freq (Hz)",
    "High Freq (Hz)",
    RAVEN_BEGIN_PATH,
    RAVEN_BEGIN_FILE,
)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value).replace("\t", " ").replace("\n", " ")


def format_selection_table(
    rows: Iterable[Annotation | Mapping[str, Any]],
    *,
    label_column: str = "Annotation",
    extra_columns: Sequence[str] = (),
    low_freq_hz: float = params.MEL_MIN_HZ,
    high_freq_hz: float = params.MEL_MAX_HZ,
    sort: bool = True,
) -> str:
    """Rows -> the text of one Raven Pro selection table (tab-separated, one header line).

    Args:
      rows: `Annotation`s, or mappings with `file` (or `recording_key` / `source`),
        `start_seconds`, `end_seconds`, optional `label` and a value for each extra column.
      label_column: name of the label column.
      extra_columns: further columns (e.g. "Score"), filled from the mapping key of that name
        (floats are written with 6 decimals).
      low_freq_hz, high_freq_hz: the band drawn in Raven (default: the VGGish mel band).
      sort: order rows by (file, start, end, label); selections are numbered from 1 in that order.
    Returns:
      The table; `Begin Path` holds the file as given, `Begin File` its base name, times are
      seconds from the file's start with 6 decimals (so `parse_raven` reads them back to 1e-6).
    """
    records = []
    for row in rows:
        if isinstance(row, Annotation):
            record = {
                "file": row.recording_key,
                "start_seconds": row.start_seconds,
                "end_seconds": row.end_seconds,
                "label": row.label,
            }
        else:
            record = dict(row)
            record.setdefault("file", record.get("recording_key", record.get("source", "")))
        records.append(record)
    if sort:
        records.sort(
            key=lambda r: (
                str(r["file"]),
                float(r["start_seconds"]),
                float(r["end_seconds"]),
                str(r.get("label", "")),
            )
        )
    header = list(SELECTION_TABLE_COLUMNS) + [label_column] + list(extra_columns)
    lines = ["\t".join(header)]
    for i, r in enumerate(records, start=1):
        file = str(r["file"])
        cells = [
            str(i),
            "Spectrogram 1",
            "1",
            _cell(float(r["start_seconds"])),
            _cell(float(r["end_seconds"])),
            f"{low_freq_hz:.1f}",
            f"{high_freq_hz:.1f}",
            file,
            base_name(file),
            _cell(r.get("label", "")),
        ] + [_cell(r.get(c)) for c in extra_columns]
        lines.append("\t".join(cells))
    return "\n".join(lines) + "\n"
