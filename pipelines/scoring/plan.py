"""Planning the work items of each input: whole files, segments of long recordings, archive parts.

Stage: scoring 2 (plan). `PlanFn`: Source -> (Source, Segment or ArchivePart), so the runner can
spread one long recording or one big archive over several workers (`pipelines.scoring.segments`,
`pipelines.scoring.sources.plan_archive_parts`).
"""

import logging

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.scoring import segments, sources
from pipelines.scoring.config import NAMESPACE, SPLIT_MIN_BYTES, ScoringConfig

_LOG = logging.getLogger(__name__)
WHOLE = segments.Segment(0, 1, 0, None)


class PlanFn(beam.DoFn):
    """Source -> (Source, Segment or ArchivePart): work items the runner can spread over workers.

    Long audio files become several segments, and zip and uncompressed tar archives parts of about
    `archive_part_bytes` of members; everything else is one item. Only audio files of at least SPLIT_MIN_BYTES are probed
    (one header read); a file whose header or archive index cannot be read stays whole, and decoding
    reports the problem.
    """

    def __init__(self, config: ScoringConfig):
        # A model whose frames cannot be split into segments (BirdNET's overlap) streams files whole.
        self._split_seconds = config.split_seconds if config.model.segmentable else 0
        self._part_bytes = config.archive_part_bytes
        self._split = Metrics.counter(NAMESPACE, "recordings_split")
        self._archives_split = Metrics.counter(NAMESPACE, "archives_split")
        self._skipped_members = Metrics.counter(NAMESPACE, "archive_members_skipped")

    def process(self, source):
        if source.kind == sources.KIND_ARCHIVE and sources.splits_into_parts(source.path):
            yield from self._plan_archive(source)
            return
        if (
            source.kind != sources.KIND_AUDIO
            or self._split_seconds <= 0
            or 0 <= source.size_bytes < SPLIT_MIN_BYTES
        ):
            yield source, WHOLE
            return
        from gunshot_core import audio

        try:
            with sources.readable(source.path) as target:
                plan = segments.plan_segments(audio.probe(target), self._split_seconds)
        except Exception:  # noqa: BLE001 - decoding will report it
            plan = [WHOLE]
        if len(plan) > 1:
            self._split.inc()
            _LOG.info("%s: decoding in %d segments", source.path, len(plan))
        for segment in plan:
            yield source, segment

    def _plan_archive(self, source):
        try:
            members, skipped = sources.list_archive_members(source.path)
        except Exception:  # noqa: BLE001 - decoding the whole archive in one pass will report it
            members = []
        if not members:  # unreadable, sparse or without audio: the one-pass path gives the rows
            yield source, WHOLE
            return
        if skipped:
            self._skipped_members.inc(len(skipped))
            _LOG.info("%s: skipped %d non-audio members, e.g. %s", source.path, len(skipped), skipped[:3])
        parts = sources.plan_archive_parts(members, self._part_bytes)
        if len(parts) > 1:
            self._archives_split.inc()
            _LOG.info("%s: %d audio members in %d parts", source.path, len(members), len(parts))
        for part in parts:
            yield source, part
