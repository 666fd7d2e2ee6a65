"""Report stage: detections per group at the thresholds of a `gunshot calibrate` calibration.json.

For each group (named by the calibration's group pattern) the windows at or above the group's
calibrated threshold (a group the calibration does not know gets its overall threshold) and the
events they make (runs of consecutive such windows in a recording, as the scoring pipeline merges
them), beside the windows the run itself detected at its own threshold. Computed by DuckDB over the
`windows` tables, so no score is recomputed.
"""

from __future__ import annotations

import json
import math
import os

from pipelines.report.tables import ReportTables, _quote


class ThresholdsFileError(ValueError):
    """calibration.json is missing or not one `gunshot calibrate` wrote."""


def read_calibration(path: str) -> dict:
    """{'overall': float, 'groups': {group: float}, 'group_pattern': str | None, 'target_precision'}."""
    if not os.path.isfile(path):
        raise ThresholdsFileError(
            f"--thresholds {path}: no such file; give the calibration.json that "
            "`gunshot calibrate --output CAL_DIR` wrote (CAL_DIR/calibration.json)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
        groups = {g: float(r["threshold"]) for g, r in document["groups"].items()}
        overall = float(document["overall"]["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ThresholdsFileError(
            f"--thresholds {path}: not a calibration.json of `gunshot calibrate` ({type(e).__name__}: {e})"
        ) from e
    return {
        "overall": overall,
        "groups": {g: t for g, t in groups.items() if not math.isnan(t)},
        "group_pattern": document.get("group_pattern"),
        "target_precision": document.get("target_precision"),
    }


def calibrated_rows(tables: ReportTables, i: int, calibration: dict) -> list[dict]:
    """Per group of run i: threshold, windows, run-detected windows, calibrated detections and events."""
    expr = tables.group_expression(i, calibration["group_pattern"])
    values = ", ".join(f"({_quote(g)}, CAST({t!r} AS DOUBLE))" for g, t in sorted(calibration["groups"].items()))
    known = (
        f"t(grp, thr) AS (VALUES {values})"
        if values
        else "t(grp, thr) AS (SELECT NULL::VARCHAR, NULL::DOUBLE WHERE false)"
    )
    return tables._rows(
        f"""WITH {known},
            w AS (SELECT {expr} AS grp, source, window_index, score, detected FROM r{i}_windows),
            j AS (SELECT w.*, coalesce(t.thr, CAST({calibration["overall"]!r} AS DOUBLE)) AS thr, t.thr IS NOT NULL AS own
                  FROM w LEFT JOIN t USING (grp)),
            a AS (SELECT *, score >= thr AS above,
                         lag(score >= thr) OVER (PARTITION BY source ORDER BY window_index) AS before FROM j)
            SELECT grp AS "group", any_value(thr) AS threshold, bool_or(own) AS calibrated,
                   count(*) AS windows, count(*) FILTER (WHERE detected) AS run_detected,
                   count(*) FILTER (WHERE above) AS detected,
                   count(*) FILTER (WHERE above AND NOT coalesce(before, false)) AS events
            FROM a GROUP BY grp ORDER BY grp"""
    )
