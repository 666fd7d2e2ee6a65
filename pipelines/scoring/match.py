"""Matching the scoring inputs: patterns -> Sources, one error row per pattern that matches nothing.

Stage: scoring 1 (match). `MatchSources` expands each `--input` pattern on the workers with
`pipelines.scoring.sources.expand_pattern` (stage 'match' of the errors table).
"""

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.scoring import sources
from pipelines.scoring.config import ERRORS_TAG, NAMESPACE
from pipelines.scoring.reporting import _Progress, _warn, error_row


class MatchFn(beam.DoFn):
    """pattern -> Source per matched file; a pattern matching nothing -> error row (stage 'match')."""

    def __init__(self):
        self._matched = Metrics.counter(NAMESPACE, "files_matched")
        self._unmatched = Metrics.counter(NAMESPACE, "patterns_unmatched")

    def process(self, pattern):
        for item in sources.expand_pattern(pattern):
            if isinstance(item, sources.MatchError):
                self._unmatched.inc()
                _warn("match", "input %s", item.message)
                yield beam.pvalue.TaggedOutput(
                    ERRORS_TAG, error_row(item.pattern, "match", item.reason, item.message)
                )
            else:
                self._matched.inc()
                _Progress.add(matched=1)
                yield item


def _first_source(kv):
    return min(kv[1])


class MatchSources(beam.PTransform):
    """PCollection[str] patterns -> (PCollection[Source], PCollection[dict] error rows).

    Each file appears once even when several patterns match it; sources are redistributed so decoding
    spreads over workers.
    """

    def expand(self, patterns):
        matched = patterns | "Expand" >> beam.ParDo(MatchFn()).with_outputs(ERRORS_TAG, main="sources")
        unique = (
            matched.sources
            | "KeyByPath" >> beam.Map(lambda s: (s.path, s))
            | "Dedupe" >> beam.GroupByKey()
            | "First" >> beam.Map(_first_source)
        )
        return unique, matched[ERRORS_TAG]
