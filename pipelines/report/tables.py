"""Report stage: reads the tables of scoring runs with DuckDB and aggregates them out of core.

A scoring run (`gunshot batch --output DIR`) is a folder of Parquet shards per table
(`windows-00000-of-00004.parquet`, ...; schemas in `pipelines.schemas`) plus `run.json`. DuckDB scans
the shards in place for local runs, within `memory_limit` (spilling to `temp_directory` when an
aggregate does not fit), so a run of any size is summarised in bounded memory. Runs on `gs://` are
first copied, table shards and run.json only (never the embeddings), to a local staging folder
through Beam's FileSystems (the project's GCS client; DuckDB's httpfs extension would have to be
downloaded at run time, which offline machines cannot do). A table with no shards reads as empty.

Every query orders its result completely, so the same tables give the same report.

    runs = ReportTables([RunInput("old", "scores/old"), RunInput("new", "gs://b/new")], staging="tmp/")
    runs.summary(0)                       # dict of counts for run 0
    runs.top_events(0, 200)               # list of dicts, best first
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import re
import shutil

import numpy as np
import pyarrow as pa

from pipelines import schemas
from pipelines.scoring import outputs

_LOG = logging.getLogger(__name__)

READ_TABLES = ("windows", "recordings", "events", "errors", "frames")
HISTOGRAM_BINS = 50
#: Recordings per group whose score timelines are drawn (recordings without timestamps).
MAX_TIMELINE_RECORDINGS = 12
#: Points per recording in those timelines (each the best window score of its stretch).
TIMELINE_POINTS = 600
#: Days drawn as a continuous calendar; longer spans show only the days with detections.
MAX_CALENDAR_DAYS = 400
NO_GROUP = "(no match)"


@dataclasses.dataclass(frozen=True)
class RunInput:
    """One `--scores [NAME=]DIR` argument."""

    name: str
    uri: str

    @classmethod
    def parse(cls, value: str, position: int) -> RunInput:
        """`NAME=DIR` or `DIR` (named after the folder, or `run<N>` when that is empty)."""
        name, sep, uri = value.partition("=")
        if not sep or "/" in name or ":" in name:
            uri = value
            name = os.path.basename(value.rstrip("/")) or f"run{position + 1}"
        if not uri:
            raise ValueError(f"--scores {value!r}: no directory given")
        return cls(name, uri)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _match(pattern: str) -> list[str]:
    from apache_beam.io.filesystems import FileSystems

    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # noqa: BLE001 - a missing folder holds no shards
        return []


def stage_run(uri: str, staging: str) -> str:
    """A local folder holding the run's table shards and run.json: `uri` itself when local, else a
    copy under `staging` (gs:// and other Beam file systems).

    Raises:
      FileNotFoundError: the run has neither table shards nor run.json.
    """
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    if "://" not in uri:
        if not os.path.isdir(uri):
            raise FileNotFoundError(f"--scores {uri}: no such folder")
        return uri
    names = [outputs.table_pattern(uri, t) for t in READ_TABLES]
    files = [path for pattern in names for path in _match(pattern)]
    manifest = FileSystems.join(uri, outputs.RUN_MANIFEST)
    if FileSystems.exists(manifest):
        files.append(manifest)
    if not files:
        raise FileNotFoundError(f"--scores {uri}: no scoring tables (windows-*.parquet, run.json) there")
    os.makedirs(staging, exist_ok=True)
    for path in files:
        target = os.path.join(staging, path.rsplit("/", 1)[-1])
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as src:
            with open(target + ".part", "wb") as dst:
                shutil.copyfileobj(src, dst, 8 << 20)
        os.replace(target + ".part", target)
    _LOG.info("copied %d files of %s to %s", len(files), uri, staging)
    return staging


def read_manifest(directory: str) -> dict | None:
    """run.json of a (local) run folder, or None when it is missing or unreadable."""
    path = os.path.join(directory, outputs.RUN_MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def common_folder(first: str, last: str) -> str:
    """The deepest folder (ending in '/') containing both paths; for sorted paths, of all between."""
    prefix = os.path.commonprefix([first, last])
    return prefix[: prefix.rfind("/") + 1]


class ReportTables:
    """DuckDB views over the tables of one or more runs: `r{i}_windows`, `r{i}_recordings`, ...

    Args:
      runs: the runs, in --scores order.
      staging: local folder for copies of remote runs (one subfolder per run).
      memory_limit: DuckDB's memory limit, e.g. '1GB' (aggregations spill to disk beyond it).
      threads: DuckDB worker threads.
    """

    def __init__(self, runs: list[RunInput], staging: str, memory_limit: str = "1GB", threads: int = 2):
        import duckdb

        self.runs = runs
        self.con = duckdb.connect()
        spill = os.path.join(staging, "duckdb-spill")
        os.makedirs(spill, exist_ok=True)
        self.con.execute(f"SET memory_limit = {_quote(memory_limit)}")
        self.con.execute(f"SET threads = {int(threads)}")
        self.con.execute(f"SET temp_directory = {_quote(spill)}")
        self.con.execute("SET preserve_insertion_order = false")
        self.con.execute("SET TimeZone = 'UTC'")
        self.directories = []
        self.manifests = []
        self.shards: list[dict[str, list[str]]] = []
        for i, run in enumerate(runs):
            directory = stage_run(run.uri, os.path.join(staging, f"run{i}"))
            self.directories.append(directory)
            self.manifests.append(read_manifest(directory))
            shards = {}
            for table in READ_TABLES:
                files = sorted(
                    os.path.join(directory, f)
                    for f in os.listdir(directory)
                    if re.fullmatch(rf"{table}-\d+-of-\d+\.parquet", f)
                )
                shards[table] = files
                view = f"r{i}_{table}"
                if files:
                    listing = "[" + ", ".join(_quote(f) for f in files) + "]"
                    self.con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet({listing})")
                else:
                    self.con.register(view, schemas.SCORE_TABLES[table].empty_table())
            if not any(shards.values()) and self.manifests[-1] is None:
                raise FileNotFoundError(
                    f"--scores {run.uri}: no scoring tables (windows-*.parquet, run.json) there"
                )
            self.shards.append(shards)

    def close(self) -> None:
        self.con.close()

    def _rows(self, sql: str, params=None) -> list[dict]:
        cursor = self.con.execute(sql, params or [])
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def table_bytes(self, i: int) -> int:
        """Bytes of the Parquet shards the report reads for run i."""
        return sum(os.path.getsize(f) for files in self.shards[i].values() for f in files)

    # ---- summary -------------------------------------------------------------------------------

    def summary(self, i: int) -> dict:
        """Counts of run i computed from its tables (run.json adds wall time and parameters).

        Returns:
          dict: recordings, recordings_ok, recordings_failed, recordings_detected, audio_hours,
          windows, detected_windows, events, errors, provenance (dict of the provenance columns,
          from the first table row that has them, else run.json).
        """
        rec = self._rows(
            f"""SELECT count(*) AS recordings,
                       count(*) FILTER (WHERE status = 'ok') AS recordings_ok,
                       count(*) FILTER (WHERE status <> 'ok') AS recordings_failed,
                       count(*) FILTER (WHERE detected) AS recordings_detected,
                       coalesce(sum(duration_seconds) FILTER (WHERE status = 'ok'), 0) / 3600.0 AS audio_hours
                FROM r{i}_recordings"""
        )[0]
        win = self._rows(
            f"SELECT count(*) AS windows, count(*) FILTER (WHERE detected) AS detected_windows FROM r{i}_windows"
        )[0]
        events = self._rows(f"SELECT count(*) AS n FROM r{i}_events")[0]["n"]
        errors = self._rows(f"SELECT count(*) AS n FROM r{i}_errors")[0]["n"]
        provenance = {}
        names = [f.name for f in schemas.PROVENANCE_FIELDS + schemas.EMBEDDING_MODEL_FIELDS]
        for table in ("recordings", "windows", "errors"):
            present = {d[0] for d in self.con.execute(f"SELECT * FROM r{i}_{table} LIMIT 0").description}
            # tables from before the precision columns lack them: the summary shows fp32 for those
            rows = self._rows(
                f"SELECT {', '.join(n for n in names if n in present)} FROM r{i}_{table} LIMIT 1"
            )
            if rows:
                provenance = rows[0]
                break
        if not provenance and self.manifests[i]:
            provenance = dict(self.manifests[i].get("provenance") or {})
        return {**rec, **win, "events": events, "errors": errors, "provenance": provenance}

    # ---- distributions -------------------------------------------------------------------------

    def histogram(self, i: int, bins: int = HISTOGRAM_BINS) -> tuple[np.ndarray, np.ndarray]:
        """Window scores of run i in `bins` equal bins over [0, 1].

        Returns:
          (float64 [bins + 1] edges, int64 [bins] counts).
        """
        rows = self.con.execute(
            f"""SELECT least(greatest(floor(score * {bins}), 0), {bins - 1})::INTEGER AS b, count(*) AS n
                FROM r{i}_windows GROUP BY b ORDER BY b"""
        ).fetchall()
        counts = np.zeros(bins, np.int64)
        for b, n in rows:
            counts[b] = n
        return np.linspace(0.0, 1.0, bins + 1), counts

    def group_expression(self, i: int, group_pattern: str | None) -> str:
        """SQL for the group of a `source`: the first capture group (or the whole match) of
        `group_pattern`, else the top folder below the folder common to all of run i's files."""
        if group_pattern:
            group = 1 if re.compile(group_pattern).groups else 0
            return f"coalesce(nullif(regexp_extract(source, {_quote(group_pattern)}, {group}), ''), {_quote(NO_GROUP)})"
        bounds = self.con.execute(f"SELECT min(file), max(file) FROM r{i}_recordings").fetchall()[0]
        if bounds[0] is None:
            return "source"
        prefix = common_folder(bounds[0], bounds[1])
        own = prefix.rstrip("/").rsplit("/", 1)[-1] or prefix or "."
        rel = f"substr(source, {len(prefix) + 1})"
        top = f"split_part(split_part({rel}, '/', 1), '!', 1)"
        return f"CASE WHEN starts_with(source, {_quote(prefix)}) AND strpos({rel}, '/') > 0 THEN {top} ELSE {_quote(own)} END"

    def group_counts(self, i: int, group_pattern: str | None) -> list[dict]:
        """Per group: recordings, audio hours, windows, detected windows, timestamped or not;
        most detections first."""
        expr = self.group_expression(i, group_pattern)
        return self._rows(
            f"""WITH w AS (SELECT {expr} AS grp, count(*) AS windows, count(*) FILTER (WHERE detected) AS detected,
                                  count(*) FILTER (WHERE detected AND start_utc IS NOT NULL) AS detected_utc
                           FROM r{i}_windows GROUP BY grp),
                     r AS (SELECT {expr} AS grp, count(*) AS recordings,
                                  coalesce(sum(duration_seconds) FILTER (WHERE status = 'ok'), 0) / 3600.0 AS hours
                           FROM r{i}_recordings GROUP BY grp)
                SELECT coalesce(r.grp, w.grp) AS grp, coalesce(r.recordings, 0) AS recordings,
                       coalesce(r.hours, 0) AS hours, coalesce(w.windows, 0) AS windows,
                       coalesce(w.detected, 0) AS detected, coalesce(w.detected_utc, 0) AS detected_utc
                FROM r FULL OUTER JOIN w ON r.grp = w.grp
                ORDER BY detected DESC, grp"""
        )

    def calendar(self, i: int, group_pattern: str | None, groups: list[str]) -> dict[str, dict]:
        """Detections per UTC day x hour of day for each of `groups` (timestamped windows only).

        Returns:
          {group: {"rows": [day labels], "counts": int64 [days, 24], "calendar": bool}}; with
          `calendar` False the rows are only the days with detections (span over MAX_CALENDAR_DAYS).
        """
        if not groups:
            return {}
        expr = self.group_expression(i, group_pattern)
        wanted = pa.table({"grp": pa.array(groups, pa.string())})
        self.con.register("wanted_groups", wanted)
        rows = self.con.execute(
            f"""SELECT grp, CAST(start_utc AS DATE) AS day, hour(start_utc) AS h, count(*) AS n
                FROM (SELECT {expr} AS grp, start_utc FROM r{i}_windows WHERE detected AND start_utc IS NOT NULL)
                WHERE grp IN (SELECT grp FROM wanted_groups)
                GROUP BY ALL ORDER BY grp, day, h"""
        ).fetchall()
        self.con.unregister("wanted_groups")
        by_group: dict[str, dict] = {}
        for grp, day, hour, n in rows:
            by_group.setdefault(grp, {})[(day, hour)] = n
        result = {}
        for grp, cells in by_group.items():
            days = sorted({d for d, _ in cells})
            span = (days[-1] - days[0]).days + 1
            calendar = span <= MAX_CALENDAR_DAYS
            if calendar:
                days = [days[0] + datetime.timedelta(days=k) for k in range(span)]
            index = {d: k for k, d in enumerate(days)}
            counts = np.zeros((len(days), 24), np.int64)
            for (d, h), n in cells.items():
                counts[index[d], h] = n
            result[grp] = {"rows": [d.isoformat() for d in days], "counts": counts, "calendar": calendar}
        return result

    def recording_timelines(self, i: int, group_pattern: str | None, groups: list[str]) -> dict[str, dict]:
        """Window scores over time of the recordings without a UTC time that have detections, for each
        of `groups`: the MAX_TIMELINE_RECORDINGS recordings with most detected windows, each reduced
        to at most TIMELINE_POINTS bins (the best score of the windows starting in a bin).

        Returns:
          {group: {"rows": [{"source", "starts": float64 [bins], "ends": float64 [bins],
          "scores": float32 [bins], "detected": int (windows)}], "more": recordings not shown}}
        """
        if not groups:
            return {}
        expr = self.group_expression(i, group_pattern)
        self.con.register("wanted_groups", pa.table({"grp": pa.array(groups, pa.string())}))
        rows = self.con.execute(
            f"""WITH d AS (SELECT grp, source, count(*) AS n
                           FROM (SELECT {expr} AS grp, source FROM r{i}_windows WHERE detected AND start_utc IS NULL)
                           WHERE grp IN (SELECT grp FROM wanted_groups) GROUP BY grp, source),
                     t AS (SELECT grp, source, n, row_number() OVER (PARTITION BY grp ORDER BY n DESC, source) AS k,
                                  count(*) OVER (PARTITION BY grp) AS recordings FROM d),
                     s AS (SELECT source, max(end_seconds) AS span FROM r{i}_windows
                           WHERE source IN (SELECT source FROM t WHERE k <= {MAX_TIMELINE_RECORDINGS}) GROUP BY source)
                SELECT t.grp, t.source, t.k, t.recordings, t.n,
                       floor(w.start_seconds / greatest(s.span / {TIMELINE_POINTS}, 1e-9))::BIGINT AS b,
                       min(w.start_seconds) AS x0, max(w.end_seconds) AS x1, max(w.score) AS score
                FROM t JOIN s ON s.source = t.source JOIN r{i}_windows w ON w.source = t.source
                WHERE t.k <= {MAX_TIMELINE_RECORDINGS}
                GROUP BY t.grp, t.source, t.k, t.recordings, t.n, b ORDER BY t.grp, t.k, b"""
        ).fetchall()
        self.con.unregister("wanted_groups")
        by_group: dict[str, dict] = {}
        for grp, source, _k, recordings, n, _b, x0, x1, score in rows:
            entry = by_group.setdefault(grp, {"sources": {}, "more": 0})
            entry["more"] = recordings
            points = entry["sources"].setdefault(source, {"n": n, "points": []})
            points["points"].append((x0, x1, score))
        result = {}
        for grp, entry in by_group.items():
            out = []
            for source, data in entry["sources"].items():
                pts = data["points"]
                out.append(
                    {
                        "source": source,
                        "starts": np.array([p[0] for p in pts], np.float64),
                        "ends": np.array([p[1] for p in pts], np.float64),
                        "scores": np.array([p[2] for p in pts], np.float32),
                        "detected": int(data["n"]),
                    }
                )
            result[grp] = {"rows": out, "more": entry["more"] - len(out)}
        return result

    # ---- events --------------------------------------------------------------------------------

    def top_events(self, i: int, limit: int) -> list[dict]:
        """The `limit` events of run i with the highest peak score (ties: by source, then start), with
        their recording's file, member, duration, sample rate and start time."""
        return self._rows(
            f"""SELECT e.source, e.event_index, e.start_seconds, e.end_seconds, e.peak_score, e.peak_seconds,
                       e.num_windows, e.start_utc, e.end_utc, e.window_seconds, e.threshold,
                       r.file, r.member, r.input_kind, r.duration_seconds, r.sample_rate, r.start_utc AS recording_utc
                FROM r{i}_events e LEFT JOIN r{i}_recordings r ON r.source = e.source
                ORDER BY e.peak_score DESC, e.source, e.start_seconds LIMIT {int(limit)}"""
        )

    def windows_in_spans(
        self, i: int, spans: list[tuple[int, str, float, float]], table: str = "windows"
    ) -> dict[int, list[tuple]]:
        """Windows (or, with table="frames", the frame scores of a frame-level head) of run i that
        overlap each span, in one join.

        Args:
          spans: [(span id, source, start seconds, end seconds)].
          table: "windows" or "frames" (empty for a run without a frames table).
        Returns:
          {span id: [(start_seconds, end_seconds, score, detected), ...] by start}.
        """
        if not spans:
            return {}
        wanted = pa.table(
            {
                "sid": pa.array([s[0] for s in spans], pa.int64()),
                "source": pa.array([s[1] for s in spans], pa.string()),
                "lo": pa.array([s[2] for s in spans], pa.float64()),
                "hi": pa.array([s[3] for s in spans], pa.float64()),
            }
        )
        self.con.register("spans", wanted)
        order = "frame_index" if table == "frames" else "window_index"
        rows = self.con.execute(
            f"""SELECT s.sid, w.start_seconds, w.end_seconds, w.score, w.detected
                FROM spans s JOIN r{i}_{table} w ON w.source = s.source AND w.end_seconds > s.lo AND w.start_seconds < s.hi
                ORDER BY s.sid, w.start_seconds, w.{order}"""
        ).fetchall()
        self.con.unregister("spans")
        result: dict[int, list[tuple]] = {}
        for sid, start, end, score, detected in rows:
            result.setdefault(sid, []).append((start, end, float(score), bool(detected)))
        return result

    # ---- errors and recordings -----------------------------------------------------------------

    def error_groups(self, i: int) -> list[dict]:
        """Errors of run i per (stage, reason): count, and the first source and its message."""
        return self._rows(
            f"""SELECT stage, reason, count(*) AS n, min(source) AS example_source,
                       arg_min(message, source) AS example_message
                FROM r{i}_errors GROUP BY stage, reason ORDER BY n DESC, stage, reason"""
        )

    def errors(self, i: int, limit: int) -> list[dict]:
        """Up to `limit` error rows of run i, ordered by stage, reason and source."""
        return self._rows(
            f"""SELECT stage, reason, source, message FROM r{i}_errors
                ORDER BY stage, reason, source, message LIMIT {int(limit)}"""
        )

    def recordings_with_detections(self, i: int, limit: int) -> list[dict]:
        """Up to `limit` recordings of run i with detections, most detected windows first."""
        return self._rows(
            f"""SELECT r.source, r.duration_seconds, r.windows, w.detected, r.events, r.max_score,
                       r.max_score_start_seconds, r.start_utc
                FROM r{i}_recordings r
                JOIN (SELECT source, count(*) FILTER (WHERE detected) AS detected FROM r{i}_windows GROUP BY source) w
                  ON w.source = r.source
                WHERE w.detected > 0
                ORDER BY w.detected DESC, r.max_score DESC, r.source LIMIT {int(limit)}"""
        )
