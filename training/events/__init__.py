"""Event-level evaluation of scoring runs against annotations (`gunshot evaluate-events`), one module
per stage in data-flow order (each imports only modules above it).

    inputs.py     1 inputs     --scores runs + --annotations -> Run of annotated Recordings, error rows
    matching.py   2 matching   one-to-one matching of events to annotated positives (numpy/scipy)
    figures.py    3 figures    events at a threshold -> Outcome -> recall, precision, false alarms per
                               hour; threshold sweep, operating points, budgets, per group, per label
    outputs.py    4 outputs    review Raven tables, CSV, plots, report.md
    job.py          the job    flags -> the stages above -> --output; evaluate_events, parse_args, main

`python -m training.evaluate_events` (`training/evaluate_events.py`) is the entry point:

    python -m training.evaluate_events --scores old=scores/default --scores new=scores/retrained \\
        --annotations 'heldout/**/*.selections.txt' --output eval/heldout

Each `--scores NAME=DIR` is the output directory of `gunshot batch` (local or `gs://`) over the same
annotated recordings. Annotations are read with `gunshot_core.annotations` (Raven selection tables,
Audacity labels, CSV; the readers of `gunshot dataset`) and matched to the runs' `source`s with its
`RecordingMatcher`. Labels given with `--positive` are the events to find (default `gunshot`); every
other label is a confuser, used to explain false alarms.

What is evaluated:
  - recordings: those an annotation file covers (a Raven table or Audacity file without rows says
    "annotated, nothing there"); with `--all_annotated`, every recording of the runs. Audio duration
    comes from the `recordings` table (status ok). Annotated positives in a recording the run failed
    on count as missed (reason `recording_failed`); its duration does not count.
  - events: at the run's own threshold, the run's `events` table; at any other threshold, events
    re-derived from the `windows` table with the scoring pipeline's own merge
    (`pipelines.scoring.events.merge_events`: consecutive windows with score >= threshold form one event),
    or from the `frames` table when the run has one (a head with frame scores: consecutive frames).
  - matching, one to one: an event and an annotated positive may match when they overlap once the
    annotation is widened by `--tolerance_seconds` on both sides (closed intervals: touching counts).
    Per recording, the matching with the most pairs is taken (`scipy.optimize.linear_sum_assignment`
    on pair weights `M + overlap`, M larger than any total overlap); among those, the one with the
    largest total overlap of the unwidened intervals. An event covering two gunshots matches one.
  - figures: recall = matched positives / positives; precision = matched events / events;
    false alarms = unmatched events, per hour of evaluated audio; F1.
  - target recall: the highest swept threshold whose recall reaches `--target_recall` (the cheapest
    in false alarms of the thresholds tried; recall is not monotone in the threshold, since merged
    events can swallow neighbours), or null when no threshold reaches it.

Outputs in `--output`:
    metrics.json          every scorer: figures at its run threshold and at the target recall, and
                          the best recall within each --false_alarm_budgets false alarms per hour
    sweep.parquet, sweep.csv   one row per scorer and threshold (101-step grid + score quantiles +
                          the run's threshold)
    per_group.csv         per scorer, operating point and group (--group_pattern, e.g. the site)
    per_label.csv         per scorer, operating point and annotation label: recall of positive
                          labels, how often each confuser triggered an event, false alarms it explains
    pr.png, recall_vs_false_alarms.png   all scorers on the same axes
    errors.csv            annotation rows and recordings that could not be evaluated, with reasons
    report.md             the scorers side by side
    NAME/metrics.json     the scorer's part of metrics.json
    NAME/review/<path>/<stem>.Table.1.selections.txt   per recording with a miss or a false alarm at
                          the run threshold: a Raven table (`Annotation` = missed gunshot | false alarm,
                          `Score`, `Overlaps` = confuser labels under a false alarm), for the next review
"""
