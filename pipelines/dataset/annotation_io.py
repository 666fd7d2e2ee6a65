"""Dataset stage 1, annotations: annotation files -> `Annotation` rows matched to recordings (Beam).

Files are read through Beam's FileSystems (local or gs://) and parsed by `gunshot_core.annotations`;
each row is then matched to one recording of the job with `RecordingMatcher` (the annotation's
file name, path or stem against the recordings' sources). Every row ends matched or as an error row:
the readers' reasons (malformed_file, non_numeric, end_before_start, missing_column, ...), or
`missing_recording` / `ambiguous_recording` here.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import threading

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from gunshot_core import annotations
from gunshot_core.errors import describe

_LOG = logging.getLogger(__name__)
NAMESPACE = "dataset"
ANNOTATION_EXTENSIONS = (".txt", ".csv")
ERRORS_TAG = "errors"
COVERED_TAG = "covered"
_GLOB_CHARS = re.compile(r"[*?\[]")

MISSING_RECORDING = "missing_recording"
AMBIGUOUS_RECORDING = "ambiguous_recording"
NOT_FOUND = "not_found"


def error_row(source: str, stage: str, reason: str, message: str, annotation=None, recording=None) -> dict:
    """A row of the dataset errors table (pipelines.schemas.DATASET_ERRORS)."""
    row = {"source": source, "stage": stage, "reason": reason, "message": message, "recording": recording}
    if isinstance(annotation, annotations.Annotation):
        row.update(
            annotation_file=annotation.annotation_file,
            annotation_line=annotation.line,
            label=annotation.label,
        )
    elif isinstance(annotation, annotations.AnnotationError):
        row.update(annotation_file=annotation.annotation_file, annotation_line=annotation.line)
    return row


def expand_annotation_pattern(pattern: str) -> tuple[list[str], str | None]:
    """(sorted files, None) or ([], message) for one --annotations pattern.

    A folder is searched recursively for .txt and .csv files; a file or glob keeps what it names.
    """
    try:
        is_folder = pattern.endswith("/") or ("://" not in pattern and os.path.isdir(pattern))
        found = []
        if not is_folder:
            found = [
                m.path for m in FileSystems.match([pattern])[0].metadata_list if not m.path.endswith("/")
            ]
            is_folder = not found and not _GLOB_CHARS.search(pattern)
        if is_folder:
            listing = FileSystems.match([pattern.rstrip("/") + "/**"])[0].metadata_list
            found = [
                m.path
                for m in listing
                if m.path.lower().endswith(ANNOTATION_EXTENSIONS)
                and not os.path.basename(m.path).startswith(".")
            ]
    except Exception as e:  # noqa: BLE001 - a listing failure is an error row
        return [], f"cannot list {pattern!r}: {describe(e)}"
    if not found:
        return [], f"no annotation file matches {pattern!r}"
    return sorted(set(found)), None


class ReadAnnotationFileFn(beam.DoFn):
    """pattern -> Annotation rows; tagged COVERED_TAG: recording keys the files cover; ERRORS_TAG rows."""

    def __init__(self, label_column: str | None):
        self._label_column = label_column
        self._files = Metrics.counter(NAMESPACE, "annotation_files")
        self._rows = Metrics.counter(NAMESPACE, "annotation_rows")
        self._bad = Metrics.counter(NAMESPACE, "annotation_errors")

    def process(self, pattern: str):
        files, problem = expand_annotation_pattern(pattern)
        if problem:
            self._bad.inc()
            _LOG.warning("--annotations %s", problem)
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, error_row(pattern, "annotations", NOT_FOUND, problem))
        for path in files:
            yield from self._read(path)

    def _read(self, path: str):
        self._files.inc()
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                data = f.read()
        except Exception as e:  # noqa: BLE001 - an unreadable file is one error row
            message = f"{path}: cannot read: {describe(e)}"
            self._bad.inc()
            yield beam.pvalue.TaggedOutput(
                ERRORS_TAG,
                error_row(
                    path,
                    "annotations",
                    annotations.MALFORMED_FILE,
                    message,
                    annotations.AnnotationError(path, 0, annotations.MALFORMED_FILE, message),
                ),
            )
            return
        parsed = annotations.parse_annotations(data, path, label_column=self._label_column)
        for error in parsed.errors:
            self._bad.inc()
            yield beam.pvalue.TaggedOutput(
                ERRORS_TAG, error_row(path, "annotations", error.reason, error.message, error)
            )
        for key in parsed.recording_keys:
            yield beam.pvalue.TaggedOutput(COVERED_TAG, (key, path))
        self._rows.inc(len(parsed.rows))
        yield from parsed.rows


_DERIVED: dict = {}
_DERIVED_LOCK = threading.Lock()


def derived(side, name: str, build):
    """`build(side)`, computed once per side-input object (per worker) and kept with it.

    Side inputs are passed as plain lists (AsList) and what the DoFns need from them (a set of
    names, a matcher, a split assignment) is built here once, instead of by extra combine steps in
    the pipeline graph. A side input's content is fixed for the run, so keying by identity is safe;
    the object itself is kept in the entry, so its id cannot be reused meanwhile.
    """
    key = (id(side), name)
    with _DERIVED_LOCK:
        hit = _DERIVED.get(key)
    if hit is None or hit[0] is not side:
        hit = (side, build(side))
        with _DERIVED_LOCK:
            if len(_DERIVED) > 32:
                _DERIVED.clear()
            _DERIVED[key] = hit
    return hit[1]


def _name_set(keys) -> frozenset:
    return frozenset(annotations.base_name(k.strip()) for k in keys)


def may_be_meant(source: str, keys, globs: tuple[str, ...] = ()) -> bool:
    """Whether a recording could match some annotation key (by name), or is declared fully annotated.

    A cheap superset of what `RecordingMatcher` matches, used to skip decoding recordings nothing
    refers to. `keys`: the recording keys of every annotation (a side-input list).
    """
    names = derived(keys, "names", _name_set)
    if annotations.base_name(source) in names or annotations.stem(source) in names:
        return True
    return any(fnmatch.fnmatchcase(source, g) for g in globs)


def matcher_of(sources) -> annotations.RecordingMatcher:
    """The RecordingMatcher of the job's recordings (`sources`: side-input list of source keys)."""
    return derived(sources, "matcher", annotations.RecordingMatcher)


class MatchAnnotationFn(beam.DoFn):
    """Annotation -> (source, Annotation) of the one recording it names; else an error row."""

    def __init__(self):
        self._missing = Metrics.counter(NAMESPACE, "annotations_without_recording")

    def process(self, row: annotations.Annotation, sources):
        matcher = matcher_of(sources)
        found = matcher.candidates(row.recording_key)
        source = matcher.match(row.recording_key)
        if source is not None:
            yield source, row
            return
        self._missing.inc()
        where = f"{row.annotation_file}:{row.line}"
        if found:
            reason = AMBIGUOUS_RECORDING
            message = f"{where}: {row.recording_key!r} could be any of {', '.join(found[:5])}"
        else:
            reason = MISSING_RECORDING
            message = f"{where}: no recording of the job matches {row.recording_key!r}"
        yield beam.pvalue.TaggedOutput(
            ERRORS_TAG, error_row(row.annotation_file, "match", reason, message, row)
        )


def match_covered(element, sources):
    """(recording key, annotation file) -> source the file covers (keys without a match are skipped:
    their rows, if any, already give `missing_recording` errors)."""
    key, _ = element
    source = matcher_of(sources).match(key)
    if source is not None:
        yield source
