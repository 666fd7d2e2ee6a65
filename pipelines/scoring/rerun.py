"""Reruns (`--skip_existing`): what a previous run in the same output directory already scored.

Stage: scoring 7 (outputs). `read_previous_run` reads the previous recordings table; `CarryOver`
carries the rows of already scored files over into the new tables, so only the rest is scored.
"""

import dataclasses

import apache_beam as beam

from pipelines import schemas
from pipelines.io import tables
from pipelines.scoring.outputs import existing_files, table_pattern
from pipelines.scoring.provenance import Provenance


@dataclasses.dataclass(frozen=True)
class PreviousRun:
    """What a previous run in the same output directory already scored.

    Attributes:
      done_files: matched files all of whose recordings were scored ok (skipped by the rerun).
      done_sources: the `source` keys of those files' recordings (their rows are carried over).
    """

    done_files: frozenset
    done_sources: frozenset


def read_previous_run(output_dir: str, provenance: Provenance) -> PreviousRun:
    """Reads the recordings table of a previous run; empty when there is none.

    Raises:
      ValueError: the previous run used other models or settings (its rows could not be mixed in).
    """
    if not existing_files(table_pattern(output_dir, "recordings")):
        return PreviousRun(frozenset(), frozenset())
    table = tables.read_table(output_dir, "recordings")
    if table.num_rows == 0:
        return PreviousRun(frozenset(), frozenset())
    expected = provenance.columns()
    for column in ("model_id", "window_seconds", "hop_seconds", "threshold", "precision"):
        if column == "precision" and column not in table.column_names:
            values = {"fp32"}  # written before the column existed: always fp32
        else:
            values = set(table.column(column).to_pylist())
            if column == "precision":
                values = {v or "fp32" for v in values}
        if values != {expected[column]}:
            raise ValueError(
                f"--skip_existing: the tables in {output_dir} were made with {column}={sorted(values)}, this run"
                f" uses {expected[column]!r}; write to a new --output or rerun without --skip_existing"
            )
    files = table.column("file").to_pylist()
    statuses = table.column("status").to_pylist()
    src = table.column("source").to_pylist()
    bad = {f for f, s in zip(files, statuses, strict=True) if s != "ok"}
    done_files = frozenset(set(files) - bad)
    done_sources = frozenset(s for s, f in zip(src, files, strict=True) if f in done_files)
    return PreviousRun(done_files, done_sources)


class _KeepDone(beam.DoFn):
    def __init__(self, done_sources: frozenset, provenance_columns: tuple):
        self._done = done_sources
        self._drop = provenance_columns

    def process(self, row):
        if row["source"] in self._done and row.get("stage") != "match":
            yield {k: v for k, v in row.items() if k not in self._drop}


class CarryOver(beam.PTransform):
    """PBegin -> the previous run's rows of one table for the files this run skips (no provenance)."""

    def __init__(self, output_dir: str, name: str, done_sources: frozenset):
        super().__init__()
        self._files = existing_files(table_pattern(output_dir, name))
        self._done = done_sources

    def expand(self, pbegin):
        if not self._files or not self._done:
            return pbegin | beam.Create([])
        drop = tuple(f.name for f in schemas.PROVENANCE_FIELDS)
        reads = [pbegin | f"Read{i}" >> beam.io.ReadFromParquet(path) for i, path in enumerate(self._files)]
        return reads | "Merge" >> beam.Flatten() | "Keep" >> beam.ParDo(_KeepDone(self._done, drop))
