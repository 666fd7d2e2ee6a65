"""Every Parquet table the pipelines write, as pyarrow schemas defined once and imported everywhere.

Readers (training, tests, users) import the schemas from here; README.md documents them.
"""

import pyarrow as pa  # noqa: F401

# ---- Subset builder tables (pipelines.build_subset) ------------------------------------------
# Tables in the output directory of `python -m pipelines.build_subset` (docs/build_subset.md).
# Clips are keyed by (video_id, start_time_seconds); `clip_key` is gunshot_core.records.clip_key.

# One row per record that carries a tag's class (selected or not); `other` clips have no row.
SUBSET_TAGGED = pa.schema(
    [
        pa.field("split", pa.string(), nullable=False),  # --split name ("subset" for --input)
        pa.field("clip_key", pa.string(), nullable=False),  # "{video_id}:{start in ms}"
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("start_time_seconds", pa.float32(), nullable=False),
        pa.field("end_time_seconds", pa.float32(), nullable=False),
        pa.field("labels", pa.list_(pa.int32()), nullable=False),  # class indices used for tagging
        pa.field("label_names", pa.list_(pa.string()), nullable=False),  # display names of `labels`
        pa.field("tag", pa.string(), nullable=False),  # e.g. gunshot | no_gunshot
        pa.field("co_labels", pa.list_(pa.int32()), nullable=False),  # labels of other tags (priority)
        pa.field("leaked", pa.bool_(), nullable=False),  # video id also tagged in another split
        pa.field("selected", pa.bool_(), nullable=False),  # written to the split's subset TFRecords
        pa.field("weight", pa.float32(), nullable=False),  # class weight (--balance weights), else 1
        pa.field("rank", pa.int64(), nullable=False),  # seeded hash of the clip; lowest ranks selected
        pa.field("source", pa.string(), nullable=False),  # input shard path
        pa.field("record_index", pa.int64(), nullable=False),  # 0-based record number in the shard
    ]
)

# One row per rejected record slot or unreadable shard.
SUBSET_ERRORS = pa.schema(
    [
        pa.field("split", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # input shard (or segments CSV) path
        pa.field("record_index", pa.int64()),  # null when the whole file failed
        pa.field("offset", pa.int64()),  # byte offset of the record in the (decompressed) file
        pa.field("video_id", pa.string()),  # when the context could be read
        pa.field("reason", pa.string(), nullable=False),  # bad_data_crc | truncated | missing_labels | ...
        pa.field("detail", pa.string(), nullable=False),
    ]
)

SUBSET_TABLES = {"tagged": SUBSET_TAGGED, "errors": SUBSET_ERRORS}


# ---- Scoring tables (pipelines.score) ----------------------------------------------------------
# Tables in the output directory of `python -m pipelines.score` (docs/scoring.md describes them).
# Times: `*_seconds` are offsets from the start of the recording; `*_utc` are absolute times, set
# only when --timestamp_pattern parsed the recording's start from its file name (else null).
# Every table ends with the PROVENANCE columns, identical on every row of one run.

PROVENANCE_FIELDS = [
    pa.field("model_id", pa.string(), nullable=False),  # short hash of the three model hashes
    pa.field("head_name", pa.string(), nullable=False),  # file name of the head
    pa.field("vggish_sha256", pa.string(), nullable=False),
    pa.field("pca_sha256", pa.string(), nullable=False),
    pa.field("head_sha256", pa.string(), nullable=False),
    pa.field("code_version", pa.string(), nullable=False),  # gunshot_core.__version__
    pa.field("window_seconds", pa.float64(), nullable=False),  # head window actually used (frames * 0.96)
    pa.field("hop_seconds", pa.float64(), nullable=False),
    pa.field("threshold", pa.float64(), nullable=False),
    # How the embedding network ran (docs/precision.md). Nullable: tables written before these
    # columns existed lack them, and readers take a missing value as fp32 / TensorFlow.
    pa.field("precision", pa.string()),  # fp32 | bf16 | int8 (what --precision auto chose)
    pa.field("embedding_runtime", pa.string()),  # e.g. "tensorflow 2.21.0", "openvino 2026.4.1 + nncf 3.4.0"
]

# One row per head window over a recording's 0.96 s embedding frames.
SCORE_WINDOWS = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),  # unique id: path, or archive!member
        pa.field("window_index", pa.int32(), nullable=False),
        pa.field("start_seconds", pa.float64(), nullable=False),
        pa.field("end_seconds", pa.float64(), nullable=False),  # end of the audio the window covers
        pa.field("start_utc", pa.timestamp("ms", tz="UTC")),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("detected", pa.bool_(), nullable=False),  # score >= threshold
    ]
    + PROVENANCE_FIELDS
)

# One row per matched input (a file, an archive member, or a record of an embedding TFRecord).
RECORDING_STATUSES = ("ok", "error")
SCORE_RECORDINGS = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("file", pa.string(), nullable=False),  # the matched file (the archive for members)
        pa.field("member", pa.string()),  # path inside the archive / record id in a TFRecord
        pa.field("input_kind", pa.string(), nullable=False),  # audio | archive_member | tfrecord
        pa.field("format", pa.string()),  # soundfile format (WAV, FLAC, ...) or TFRECORD
        pa.field("sample_rate", pa.int32()),
        pa.field("channels", pa.int32()),
        pa.field("duration_seconds", pa.float64()),
        pa.field("frames", pa.int32()),  # 0.96 s embedding frames
        pa.field("windows", pa.int32()),
        pa.field("max_score", pa.float32()),
        pa.field("max_score_start_seconds", pa.float64()),  # start of the best window
        pa.field("mean_score", pa.float32()),  # mean over windows
        pa.field("detected", pa.bool_()),  # max_score >= threshold
        pa.field("events", pa.int32()),
        pa.field("start_utc", pa.timestamp("ms", tz="UTC")),
        pa.field("status", pa.string(), nullable=False),  # ok | error
        pa.field("error_reason", pa.string()),  # corrupt|empty|too_short|unsupported|unreadable|...
        pa.field("error_message", pa.string()),
    ]
    + PROVENANCE_FIELDS
)

# One row per merged run of consecutive above-threshold windows; for a head with frame scores
# (training.train --model framepool), of consecutive above-threshold 0.96 s frames.
SCORE_EVENTS = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("event_index", pa.int32(), nullable=False),
        pa.field("start_seconds", pa.float64(), nullable=False),
        pa.field("end_seconds", pa.float64(), nullable=False),
        pa.field("peak_score", pa.float32(), nullable=False),
        pa.field("peak_seconds", pa.float64(), nullable=False),  # start of the best window (frame)
        pa.field("num_windows", pa.int32(), nullable=False),  # windows merged (overlapping, frame events)
        pa.field("start_utc", pa.timestamp("ms", tz="UTC")),
        pa.field("end_utc", pa.timestamp("ms", tz="UTC")),
    ]
    + PROVENANCE_FIELDS
)

# One row per problem: a pattern that matched nothing, an unreadable file, a failed export, ...
SCORE_ERRORS = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),  # match|read|decode|embed|score|timestamp|export
        pa.field("reason", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
    ]
    + PROVENANCE_FIELDS
)

# --write_embeddings parquet: the postprocessed VGGish frames, one row per 0.96 s frame.
SCORE_EMBEDDINGS = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("frame_index", pa.int32(), nullable=False),
        pa.field("start_seconds", pa.float64(), nullable=False),
        pa.field("embedding", pa.binary(128), nullable=False),  # uint8 [128], AudioSet quantisation
    ]
    + PROVENANCE_FIELDS
)

# Only for a head with frame scores (a frame-pooling head): one row per 0.96 s frame.
SCORE_FRAMES = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("frame_index", pa.int32(), nullable=False),
        pa.field("start_seconds", pa.float64(), nullable=False),
        pa.field("end_seconds", pa.float64(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),  # the head's frame score
        pa.field("detected", pa.bool_(), nullable=False),  # score >= threshold
    ]
    + PROVENANCE_FIELDS
)

SCORE_TABLES = {
    "windows": SCORE_WINDOWS,
    "recordings": SCORE_RECORDINGS,
    "events": SCORE_EVENTS,
    "errors": SCORE_ERRORS,
    "embeddings": SCORE_EMBEDDINGS,
    "frames": SCORE_FRAMES,
}

# Provenance columns that the scoring tables of an embedding model other than the default (VGGish)
# end with, after PROVENANCE_FIELDS (whose vggish_sha256 and pca_sha256 are then empty).
EMBEDDING_MODEL_FIELDS = [
    pa.field("embedding_model", pa.string(), nullable=False),  # e.g. birdnet (gunshot_core.embedding_models)
    pa.field("embedding_hop_seconds", pa.float64(), nullable=False),  # seconds between frame starts
    pa.field("embedding_sha256", pa.string(), nullable=False),  # "role=sha256,..." of the model's files
]


def score_tables(model=None) -> dict:
    """The scoring tables' schemas for frames of embedding `model` (a gunshot_core.embedding_models
    EmbeddingModel; None or the default model: SCORE_TABLES, unchanged).

    For another model every table ends with EMBEDDING_MODEL_FIELDS, and the embeddings table's
    `embedding` holds the model's frame as little-endian bytes (BirdNET: float32 [1024], 4096 bytes).
    """
    if model is None or model.is_default:
        return SCORE_TABLES
    out = {}
    for name, schema in SCORE_TABLES.items():
        if name == "embeddings":
            index = schema.get_field_index("embedding")
            schema = schema.set(
                index, pa.field("embedding", pa.binary(model.frame_bytes), nullable=False)
            )
        for field in EMBEDDING_MODEL_FIELDS:
            schema = schema.append(field)
        out[name] = schema
    return out


# ---- Dataset tables (pipelines.dataset) ------------------------------------------------------
# Tables in the output directory of `python -m pipelines.dataset` (docs/dataset.md). Times are
# seconds from the start of the recording; an example is a window of whole 0.96 s frames.

# One row per example written to the split's TFRecords. training.data joins records to this table
# on (video_id, start_time_seconds), as it does with the subset builder's tagged table.
DATASET_EXAMPLES = pa.schema(
    [
        pa.field("split", pa.string(), nullable=False),  # --split name
        pa.field("video_id", pa.string(), nullable=False),  # the record's video_id: the source
        pa.field("start_time_seconds", pa.float32(), nullable=False),  # the record's start (float32)
        pa.field("end_time_seconds", pa.float32(), nullable=False),  # the record's end (float32)
        pa.field("tag", pa.string(), nullable=False),  # gunshot | no_gunshot
        pa.field("origin", pa.string(), nullable=False),  # annotation | confuser | background
        pa.field("label", pa.string()),  # the annotation's label (null for background)
        pa.field("group", pa.string(), nullable=False),  # --group_pattern match (e.g. the site)
        pa.field("source", pa.string(), nullable=False),  # the recording: path, or archive!member
        pa.field("member", pa.string()),  # path inside the archive, else null
        pa.field("start_seconds", pa.float64(), nullable=False),  # window start (first frame * 0.96)
        pa.field("end_seconds", pa.float64(), nullable=False),  # window end
        pa.field("first_frame", pa.int32(), nullable=False),  # index of the window's first frame
        pa.field("num_frames", pa.int32(), nullable=False),  # frames in the record
        pa.field("shift", pa.int32(), nullable=False),  # 0: the centred window; k: k-th shifted copy
        pa.field("event_start_seconds", pa.float64()),  # the annotated event (null for background)
        pa.field("event_end_seconds", pa.float64()),
        pa.field("annotation_file", pa.string()),  # where the annotation came from
        pa.field("annotation_line", pa.int32()),  # its 1-based line in that file
    ]
)

# One row per annotation, annotation file or recording that gave no example, with the reason.
DATASET_ERRORS = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),  # annotation file, recording or pattern
        pa.field("stage", pa.string(), nullable=False),  # annotations|match|decode|embed|plan|split
        pa.field("reason", pa.string(), nullable=False),  # non_numeric|missing_recording|ignored|...
        pa.field("message", pa.string(), nullable=False),
        pa.field("annotation_file", pa.string()),  # set for rows about an annotation
        pa.field("annotation_line", pa.int32()),  # 0 for a whole file
        pa.field("label", pa.string()),
        pa.field("recording", pa.string()),  # the matched recording, when known
    ]
)

DATASET_TABLES = {"examples": DATASET_EXAMPLES, "errors": DATASET_ERRORS}


# ---- Search tables (pipelines.search) ------------------------------------------------------------
# Tables in the output directory of `gunshot search` (docs/search.md). A window is `frames` (N,
# --query_frames) consecutive 0.96 s frames of one recording; times are seconds from its start.

# One row per hit: the K windows most similar to each query, best first.
SEARCH_HITS = pa.schema(
    [
        pa.field("query_index", pa.int32(), nullable=False),  # 0-based position among the --query flags
        pa.field("query", pa.string(), nullable=False),  # the --query as given
        pa.field("rank", pa.int32(), nullable=False),  # 1 = most similar; ties: by source, then time
        pa.field("source", pa.string(), nullable=False),  # recording (embeddings table `source`)
        pa.field("frame_index", pa.int32(), nullable=False),  # first frame of the window
        pa.field("start_seconds", pa.float64(), nullable=False),
        pa.field("end_seconds", pa.float64(), nullable=False),  # start + N * 0.96
        pa.field("similarity", pa.float64(), nullable=False),  # cosine of dequantised frames (mean over N)
    ]
)

# One row per --query: where its frames came from, or why it could not run.
SEARCH_QUERIES = pa.schema(
    [
        pa.field("query_index", pa.int32(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("recording", pa.string(), nullable=False),  # the part before @START
        pa.field("start_seconds", pa.float64(), nullable=False),  # START as given, else the loudest window's
        pa.field("start_from", pa.string(), nullable=False),  # given (@START) | loudest | first_frames
        pa.field("frame_index", pa.int32(), nullable=False),  # floor(START / 0.96): the window's first frame
        pa.field("window_start_seconds", pa.float64(), nullable=False),
        pa.field("window_end_seconds", pa.float64(), nullable=False),
        pa.field("frames", pa.int32(), nullable=False),  # N, --query_frames
        pa.field("origin", pa.string()),  # table | audio (null on error)
        pa.field("status", pa.string(), nullable=False),  # ok | error
        pa.field("error_reason", pa.string()),  # not_found|start_beyond_end|too_short|model_mismatch|...
        pa.field("error_message", pa.string()),
    ]
)

# One row per embeddings file that could not be searched.
SEARCH_ERRORS = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),  # the Parquet file
        pa.field("stage", pa.string(), nullable=False),  # read
        pa.field("reason", pa.string(), nullable=False),  # unreadable | wrong_schema
        pa.field("message", pa.string(), nullable=False),
    ]
)

SEARCH_TABLES = {"hits": SEARCH_HITS, "queries": SEARCH_QUERIES, "errors": SEARCH_ERRORS}
