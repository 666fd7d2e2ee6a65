"""training.transform on the DirectRunner in multi_processing mode, like remote workers.

In multi_processing mode every DoFn, its options and the tf.Transform graph are pickled and run in
separate worker processes, as on Dataflow; the result must equal the in-process run. The other two
pipelines have their multi-process runs beside their own tests:
`tests/test_build_subset.py` (byte-identical outputs with 2 processes) and
`tests/test_score_pipeline.py::test_multiprocess_run_with_other_chunks_gives_identical_tables`.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tensorflow as tf

from gunshot_core import labels as labels_lib
from tests import fixtures_audioset
from tests.conftest import AUDIOSET

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """A build_subset output with train and eval splits (small, balanced, real AudioSet label sets)."""
    from pipelines import build_subset

    root = tmp_path_factory.mktemp("mp_subset")
    catalog = labels_lib.ClassCatalog.from_files()
    positive = {catalog.resolve(n).index for n in labels_lib.DEFAULT_POSITIVE}
    picked = {"train": [], "eval": []}
    for split, csv in (("train", "balanced_train_segments.csv"), ("eval", "eval_segments.csv")):
        segments = fixtures_audioset.read_segments(AUDIOSET / csv)
        pos = [s for s in segments if set(s.labels) & positive][:25]
        picked[split] = pos + [s for s in segments if not set(s.labels) & positive][:300]
        fixtures_audioset.write_shards(root / "raw" / split, picked[split], num_shards=2, signal=1.5)
    out = root / "subset"
    build_subset.run(
        [
            f"--split=train={root / 'raw' / 'train' / '*'}",
            f"--split=eval={root / 'raw' / 'eval' / '*'}",
            f"--output={out}",
            "--num_shards=2",
        ]
    )
    return out


def _examples(directory, split):
    """{(video_id, start_time): (label, frames float32)} of a transformed split."""
    files = sorted(tf.io.gfile.glob(f"{directory}/transformed/{split}-*"))
    assert files
    out = {}
    for raw in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        example = tf.train.Example.FromString(raw)
        f = example.features.feature
        key = (f["video_id"].bytes_list.value[0].decode(), round(f["start_time"].float_list.value[0], 3))
        assert key not in out
        out[key] = (f["label"].int64_list.value[0], np.array(f["frames"].float_list.value, np.float32))
    return out


def test_transform_multiprocess_equals_in_process(subset, tmp_path, caplog):
    from training import transform

    argv = ["--train", f"{subset}/train*", "--eval", f"{subset}/eval*"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    transform.run(argv + ["--output", str(single)])
    with caplog.at_level(logging.INFO), caplog.at_level(logging.DEBUG, logger="pipelines.io.counters"):
        transform.run(
            argv
            + ["--output", str(multi), "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
        )
    info_single = json.loads((single / transform.INFO_FILE).read_text())
    info_multi = json.loads((multi / transform.INFO_FILE).read_text())
    assert info_multi["train_tag_counts"] == info_single["train_tag_counts"]
    assert info_multi["train_clips"] == info_single["train_clips"] > 0
    np.testing.assert_allclose(info_multi["frame_mean"], info_single["frame_mean"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(info_multi["frame_std"], info_single["frame_std"], rtol=0, atol=1e-6)
    for split in ("train", "eval"):
        a, b = _examples(single, split), _examples(multi, split)
        assert a.keys() == b.keys() and len(a) > 0
        for key, (label, frames) in a.items():
            assert b[key][0] == label
            np.testing.assert_allclose(b[key][1], frames, rtol=0, atol=1e-4)
    # The counters of the multi-process run are committed back and logged at the end.
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("counter ")]
    assert f"counter training.transform.DecodeClipFn/train_clips = {info_single['train_clips']}" in logged, (
        logged
    )
