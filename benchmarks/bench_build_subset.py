"""Throughput of the subset builder vs. a tf.data scan and vs. the original script, side by side.

    python -m benchmarks.bench_build_subset --records 200000 [--work_dir /tmp/bench_subset]

Writes (once, then reuses) synthetic AudioSet shards: the real eval + balanced_train clips of
../shared/audioset, repeated under suffixed video ids until `--records`, 1000 records per shard
(AudioSet's own shards hold a few hundred to a few thousand). Then measures, in one run, records/s of:

  pipeline       `pipelines.build_subset` (default classes, downsample 1:1) on the DirectRunner engine
                 (FnApiRunner, one worker), wall time including pipeline start and all outputs; shards
                 are read whole (`--fast_read auto` is on: this process has imported TensorFlow);
  pipeline_rbr   the same with --fast_read off: every shard read record by record (the reader before
                 the whole-shard one);
  pipeline_mp    the same with --direct_num_workers=2 --direct_running_mode=multi_processing;
  tfdata         floor: single-threaded tf.data TFRecordDataset -> batched parse of the context ->
                 numpy filter on the class sets (reads every byte, parses what tagging needs, writes
                 nothing);
  original       the original project's approach: pandas tagging, unseeded sample, then for every
                 record a full proto parse and `video_id in numpy_array_of_selected_ids`, writing hits
                 with TFRecordWriter;
  reader         the record-by-record reader's work without Beam (framing + CRC + parse + tag + checks)
                 in one process, to separate Beam's overhead from ours;
  reader_whole   the whole-shard reader's work without Beam (read the file, frame it, one TensorFlow
                 parse per shard, numpy tagging, tag_labels for the clips that carry a tag's class);
  one shard      the pipeline on a single shard: its start-up and fixed costs, subtracted to give the
                 marginal rate of the pipeline;

and prints the ratios pipeline/tfdata, pipeline/original, reader/tfdata and reader_whole/tfdata.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from gunshot_core import labels as labels_lib  # noqa: E402
from gunshot_core import records  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUDIOSET = os.path.join(os.path.dirname(REPO), "shared", "audioset")
RECORDS_PER_SHARD = 1000


def make_data(directory: str, n_records: int) -> list[str]:
    """Writes (or reuses) n_records synthetic records in shards of RECORDS_PER_SHARD."""
    sys.path.insert(0, REPO)
    from tests import fixtures_audioset as fx

    marker = os.path.join(directory, f"complete-{n_records}")
    if os.path.exists(marker):
        return sorted(glob.glob(os.path.join(directory, "*.tfrecord")))
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    base = fx.read_segments(os.path.join(AUDIOSET, "eval_segments.csv")) + fx.read_segments(
        os.path.join(AUDIOSET, "balanced_train_segments.csv")
    )
    segments = []
    copy = 0
    while len(segments) < n_records:
        for s in base[: n_records - len(segments)]:
            vid = s.video_id if copy == 0 else f"{s.video_id}_{copy}"
            segments.append(fx.Segment(vid, s.start_time, s.end_time, s.labels))
        copy += 1
    t = time.perf_counter()
    num_shards = (len(segments) + RECORDS_PER_SHARD - 1) // RECORDS_PER_SHARD
    paths = fx.write_shards(directory, segments, num_shards=num_shards)
    # The segments CSV of the synthetic clips, in AudioSet's format (the original script's input).
    catalog = labels_lib.ClassCatalog.from_files()
    with open(os.path.join(directory, "segments.csv"), "w") as handle:
        handle.write("# synthetic\n# num_ytids\n# YTID, start_seconds, end_seconds, positive_labels\n")
        for s in segments:
            mids = ",".join(catalog.by_index[i].mid for i in s.labels)
            handle.write(f'{s.video_id}, {s.start_time:.3f}, {s.end_time:.3f}, "{mids}"\n')
    open(marker, "w").close()
    print(
        f"wrote {len(segments)} records in {len(paths)} shards in {time.perf_counter() - t:.1f} s", flush=True
    )
    return paths


def bench_pipeline(pattern: str, output: str, extra=()) -> tuple[float, dict]:
    import json

    from pipelines import build_subset

    shutil.rmtree(output, ignore_errors=True)
    t = time.perf_counter()
    build_subset.run(
        ["--input", pattern, "--output", output, "--runner=FnApiRunner", *extra], save_main_session=False
    )
    elapsed = time.perf_counter() - t
    with open(os.path.join(output, "stats.json")) as handle:
        return elapsed, json.load(handle)["splits"]["subset"]


def bench_tfdata(paths, tags) -> tuple[float, int, int]:
    import tensorflow as tf

    pos = np.array(sorted(tags[0].indices), np.int64)
    neg = np.array(sorted(tags[1].indices), np.int64)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    spec = {
        records.VIDEO_ID: tf.io.FixedLenFeature([], tf.string),
        records.START_TIME: tf.io.FixedLenFeature([], tf.float32),
        records.LABELS: tf.io.VarLenFeature(tf.int64),
    }

    def parse(batch):
        context, _, _ = tf.io.parse_sequence_example(batch, context_features=spec)
        return context[records.VIDEO_ID], context[records.LABELS]

    ds = tf.data.TFRecordDataset(paths).batch(1024).map(parse).with_options(options)
    t = time.perf_counter()
    n = tagged = 0
    for _, labels in ds:
        rows = labels.indices[:, 0].numpy()
        values = labels.values.numpy()
        batch = labels.dense_shape[0].numpy()
        has_pos = np.zeros(batch, bool)
        has_neg = np.zeros(batch, bool)
        has_pos[rows[np.isin(values, pos)]] = True
        has_neg[rows[np.isin(values, neg)]] = True
        tagged += int((has_pos | has_neg).sum())
        n += batch
    return time.perf_counter() - t, n, tagged


def bench_original(paths, segments_csv, output_path) -> tuple[float, int, int]:
    """The original script's shape: pandas tagging of the CSV, unseeded sample, linear `in` per record."""
    import pandas as pd
    import tensorflow as tf

    catalog = labels_lib.ClassCatalog.from_files()
    gunshot = [catalog.by_name[n.lower()].mid for n in labels_lib.DEFAULT_POSITIVE]
    no_gunshot = [catalog.by_name[n.lower()].mid for n in labels_lib.DEFAULT_NEGATIVE]
    t = time.perf_counter()
    labels = pd.read_csv(segments_csv, header=2, quotechar='"', skipinitialspace=True)
    g_str = "|".join(gunshot)
    ng_str = "|".join(no_gunshot)
    labels["gunshots"] = labels["positive_labels"].str.contains(g_str)
    labels["no_gun"] = labels["positive_labels"].str.contains(ng_str) & ~labels["gunshots"]
    gun_positive = labels[labels["gunshots"]]
    no_gun_positive = labels[labels["no_gun"]].sample(gun_positive.shape[0])
    subset = pd.concat([gun_positive, no_gun_positive], ignore_index=True)
    subset_ids = subset["# YTID"].values
    written = read = 0
    with tf.io.TFRecordWriter(output_path) as writer:
        for path in paths:
            for example in tf.compat.v1.io.tf_record_iterator(path):
                read += 1
                # As the original: an Example parse of the SequenceExample bytes (its context is field 1 too).
                tf_example = tf.train.Example.FromString(example)
                vid_id = tf_example.features.feature["video_id"].bytes_list.value[0].decode(encoding="UTF-8")
                if vid_id in subset_ids:
                    writer.write(example)
                    written += 1
    return time.perf_counter() - t, read, written


def bench_reader(paths, tags) -> tuple[float, int]:
    """ReadAndTag's per-record work, in this process, without Beam."""
    t = time.perf_counter()
    n = 0
    for path in paths:
        with open(path, "rb") as handle:
            for framed in records.read_tfrecords(handle):
                n += 1
                example = records.parse_record(framed.data)
                context = records.context_from_features(example.context)
                result = labels_lib.tag_labels(context.labels, tags, "priority")
                if result.tag != labels_lib.OTHER:
                    records.embedding_frames(example)
    return time.perf_counter() - t, n


def bench_reader_whole(paths, tags) -> tuple[float, int]:
    """The whole-shard reader's work (gunshot_core.record_batch), in this process, without Beam."""
    import tensorflow as tf

    from gunshot_core import record_batch

    any_tag = frozenset().union(*(t.indices for t in tags))
    t = time.perf_counter()
    n = 0
    for path in paths:
        with open(path, "rb") as handle:
            framed = record_batch.split_framed(handle.read())
        contexts = record_batch.parse_contexts(tf, framed.payloads)
        n += len(framed.payloads)
        for i in record_batch.rows_with_any(contexts, any_tag).tolist():
            labels_lib.tag_labels(contexts.labels(i), tags, "priority")
    return time.perf_counter() - t, n


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--work_dir", default=os.path.join(tempfile.gettempdir(), "bench_build_subset"))
    parser.add_argument("--skip_mp", action="store_true", help="skip the 2-worker multi_processing run")
    args = parser.parse_args(argv)
    # Imported as the `gunshot subset` command imports them (gunshot_core.startup): the collector
    # then leaves the modules' ~600,000 objects alone while the pipeline's rows come and go.
    from gunshot_core import startup

    with startup.imports_without_gc(freeze=True):
        import tensorflow  # noqa: F401 - for the tf.data floor

        from pipelines import build_subset  # noqa: F401

    data_dir = os.path.join(args.work_dir, f"data-{args.records}")
    paths = make_data(data_dir, args.records)
    pattern = os.path.join(data_dir, "*.tfrecord")
    size_mb = sum(os.path.getsize(p) for p in paths) / 1e6
    tags = labels_lib.default_tags()
    print(f"input: {args.records} records, {len(paths)} shards, {size_mb:.0f} MB", flush=True)

    results = {}
    t, n, tagged = bench_tfdata(paths, tags)
    results["tfdata"] = n / t
    print(f"tfdata   : {n} records in {t:7.2f} s = {n / t:9.0f} rec/s (tagged {tagged})", flush=True)

    t, n = bench_reader(paths, tags)
    results["reader"] = n / t
    print(f"reader   : {n} records in {t:7.2f} s = {n / t:9.0f} rec/s     (record by record, no Beam)")
    t, n = bench_reader_whole(paths, tags)
    results["reader_whole"] = n / t
    print(
        f"reader_w : {n} records in {t:7.2f} s = {n / t:9.0f} rec/s     (whole shards, no Beam)", flush=True
    )

    t_fixed, _ = bench_pipeline(paths[0], os.path.join(args.work_dir, "out_one"))
    print(f"pipeline on one shard ({RECORDS_PER_SHARD} records): {t_fixed:.2f} s (start-up and fixed costs)")
    t, stats = bench_pipeline(pattern, os.path.join(args.work_dir, "out"))
    n = stats["records_read"]
    results["pipeline"] = n / t
    results["pipeline_marginal"] = (n - RECORDS_PER_SHARD) / max(t - t_fixed, 1e-9)
    print(
        f"pipeline : {n} records in {t:7.2f} s = {n / t:9.0f} rec/s "
        f"(tagged {stats['tagged']}, selected {stats['selected_total']})",
        flush=True,
    )
    t, _ = bench_pipeline(pattern, os.path.join(args.work_dir, "out_rbr"), ["--fast_read=off"])
    results["pipeline_rbr"] = n / t
    print(f"pipeline_rbr: {n} records in {t:7.2f} s = {n / t:9.0f} rec/s (--fast_read off)", flush=True)
    if not args.skip_mp:
        t, stats = bench_pipeline(
            pattern,
            os.path.join(args.work_dir, "out_mp"),
            ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
        )
        results["pipeline_mp"] = n / t
        print(f"pipeline2: {n} records in {t:7.2f} s = {n / t:9.0f} rec/s (2 processes)", flush=True)

    segments_csv = os.path.join(data_dir, "segments.csv")
    t, n, written = bench_original(paths, segments_csv, os.path.join(args.work_dir, "original.tfrecord"))
    results["original"] = n / t
    print(f"original : {n} records in {t:7.2f} s = {n / t:9.0f} rec/s (wrote {written})", flush=True)

    print("\nratios (records/s):")
    print(f"  pipeline / tfdata floor   = {results['pipeline'] / results['tfdata']:.2f}")
    print(f"  pipeline / original       = {results['pipeline'] / results['original']:.2f}")
    print(
        f"  pipeline without fixed start-up / tfdata = {results['pipeline_marginal'] / results['tfdata']:.2f} "
        f"({results['pipeline_marginal']:.0f} rec/s)"
    )
    if "pipeline_mp" in results:
        print(f"  pipeline 2 proc / 1 proc  = {results['pipeline_mp'] / results['pipeline']:.2f}")
    print(f"  pipeline --fast_read off / tfdata = {results['pipeline_rbr'] / results['tfdata']:.2f}")
    print(f"  pipeline / pipeline --fast_read off = {results['pipeline'] / results['pipeline_rbr']:.2f}")
    print(f"  reader (no Beam) / tfdata = {results['reader'] / results['tfdata']:.2f}")
    print(f"  reader_whole (no Beam) / tfdata = {results['reader_whole'] / results['tfdata']:.2f}")
    print(f"  pipeline / reader_whole   = {results['pipeline'] / results['reader_whole']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
