"""What `gunshot train` validates on: the eval split, held-out groups (sites), or nothing, said loudly.

A small `gunshot dataset`-shaped folder (three sites with one recording each, windows as records plus
the `examples` table with its `group` column) -> training.transform (with and without --eval) ->
training.train for one or two epochs.
"""

import json
import logging
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gunshot_core import params, records
from gunshot_core.errors import InputError
from pipelines import schemas
from tests.test_framepool import _window

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("train_validation")]

SITES = ("site1", "site2", "site3")
WINDOWS = {"train": 24, "eval": 12}  # per recording


def _write_split(root, split: str, sites, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True, exist_ok=True)
    payloads, rows = [], []
    for site in sites:
        source = f"sites/{site}/{site}_rec00.wav"
        for i in range(WINDOWS[split]):
            start = i * params.HEAD_FRAMES * params.FRAME_SECONDS
            end = start + params.HEAD_FRAMES * params.FRAME_SECONDS
            positive = i % 2 == 0
            payloads.append(records.encode_sequence_example(source, start, end, [], _window(rng, positive)))
            rows.append(
                {
                    "split": split,
                    "video_id": source,
                    "start_time_seconds": start,
                    "end_time_seconds": end,
                    "tag": "gunshot" if positive else "no_gunshot",
                    "origin": "annotation" if positive else "background",
                    "label": "gunshot" if positive else None,
                    "group": site,
                    "source": source,
                    "member": None,
                    "start_seconds": start,
                    "end_seconds": end,
                    "first_frame": i * params.HEAD_FRAMES,
                    "num_frames": params.HEAD_FRAMES,
                    "shift": 0,
                    "event_start_seconds": None,
                    "event_end_seconds": None,
                    "annotation_file": None,
                    "annotation_line": None,
                }
            )
    with open(root / split / "examples-00000-of-00001.tfrecord", "wb") as f:
        records.write_tfrecords(f, payloads)
    return rows


@pytest.fixture(scope="module")
def transformed(tmp_path_factory):
    """(TDIR with an eval split, TDIR of the same data without it)."""
    from training import transform

    root = tmp_path_factory.mktemp("dataset")
    rows = _write_split(root, "train", SITES, 0) + _write_split(root, "eval", ("site4",), 1)
    table = pa.Table.from_pylist(rows, schema=schemas.DATASET_EXAMPLES)
    pq.write_table(table, root / "examples-00000-of-00001.parquet")
    with_eval = root / "tft"
    transform.run(["--train", str(root / "train"), "--eval", str(root / "eval"), "--output", str(with_eval)])
    without = root / "tft_no_eval"
    shutil.copytree(with_eval, without)
    for path in (without / "transformed").glob("eval-*"):
        path.unlink()
    return with_eval, without


def _train(tdir, out, *extra):
    from training import train

    argv = ["--transformed", str(tdir), "--model", "logreg", "--output", str(out), "--epochs", "2"]
    return train.main([*argv, "--batch_size", "16", "--verbose", "0", *extra])


def _refused(capsys, tdir, out, *extra) -> str:
    """Runs train.main expecting a refusal: exit 2 and one error line, which it returns."""
    capsys.readouterr()
    assert _train(tdir, out, *extra) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gunshot train: error: "), captured.err
    assert not captured.out
    return lines[0]


def _card(out) -> dict:
    return json.loads((out / "card.json").read_text())


def test_without_eval_split_a_whole_site_is_held_out(transformed, tmp_path, caplog):
    _, no_eval = transformed
    with caplog.at_level(logging.INFO):
        assert _train(no_eval, tmp_path / "head") == 0
    card = _card(tmp_path / "head")
    plan = card["training"]["validation"]
    assert plan["split"] == "train" and plan["grouped_by"] == "group" and plan["groups"] == len(SITES)
    assert plan["held_out_groups"] == 1 and plan["held_out_group_names"][0] in SITES
    # every window of the held-out site, and only those, validated
    assert card["metrics"]["validation"]["clips"] == WINDOWS["train"]
    assert sum(card["training"]["train_clips"].values()) == WINDOWS["train"] * (len(SITES) - 1)
    assert "roc_auc" in card["metrics"]["validation"]
    assert any(
        "held out" in r.getMessage() and plan["held_out_group_names"][0] in r.getMessage()
        for r in caplog.records
    )


def test_eval_split_of_the_transform_is_the_validation_and_the_summary_has_metrics(
    transformed, tmp_path, capsys
):
    with_eval, _ = transformed
    assert _train(with_eval, tmp_path / "head") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    validation = summary["metrics"]["validation"]
    assert validation["split"] == "eval" and validation["clips"] == WINDOWS["eval"]
    assert validation["positives"] == WINDOWS["eval"] // 2 and "roc_auc" in validation
    card = _card(tmp_path / "head")
    assert card["training"]["train_clips"] == {"0": 36, "1": 36}  # the whole training split trains
    assert summary["threshold"] == card["threshold"] == validation["threshold"]


def test_evaluate_headlines_the_heads_own_threshold_and_reports_youden_beside_it(
    transformed, tmp_path, capsys
):
    from training import evaluate

    with_eval, _ = transformed
    head = tmp_path / "head"
    assert _train(with_eval, head, "--epochs", "1") == 0
    card = _card(head)
    capsys.readouterr()
    data = with_eval.parent / "eval"
    argv = ["--model", str(head), "--data", str(data), "--output", str(tmp_path / "e"), "--bootstrap", "0"]
    assert evaluate.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["threshold"] == card["threshold"] and summary["threshold_rule"].startswith("head")
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert summary["youden_j"] == {k: metrics["youden_j"][k] for k in summary["youden_j"]}
    assert metrics["chosen"] == metrics["at_card_threshold"]
    report = (tmp_path / "e" / "report.md").read_text()
    assert f"Threshold {card['threshold']:.4f}: head (card threshold)" in report
    assert "Youden's J on this data would pick" in report


def test_nothing_to_hold_out_warns_with_the_fix_or_is_refused(
    transformed, tmp_path, caplog, monkeypatch, capsys
):
    from training import data, train

    _, no_eval = transformed
    monkeypatch.setattr(
        data, "load_groups", lambda pattern: {f"sites/{s}/{s}_rec00.wav": "site1" for s in SITES}
    )
    line = _refused(capsys, no_eval, tmp_path / "refused", "--validation", "train")
    assert "nothing can be held out" in line and "--eval" in line
    assert not (tmp_path / "refused").exists()  # a refused run leaves nothing behind
    with caplog.at_level(logging.WARNING):
        assert _train(no_eval, tmp_path / "head") == 0
    warning = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "VALIDATION" in r.getMessage()
    ]
    assert warning and "1 group(s) (site1)" in warning[0] and "gunshot dataset --split" in warning[0]
    card = _card(tmp_path / "head")
    assert card["training"]["validation"]["split"] is None and "validation" not in card["metrics"]
    assert card["metrics"]["training"]["clips"] == WINDOWS["train"] * len(SITES)
    assert "no eval split" in _refused(capsys, no_eval, tmp_path / "refused", "--validation", "eval")
    with pytest.raises(InputError, match="no eval split"):  # the library function raises it
        train.train(train.parse_args(["--transformed", str(no_eval), "--output", str(tmp_path / "r"),
                                      "--validation", "eval"]))  # fmt: skip


def test_train_refuses_an_existing_head_unless_overwrite(transformed, tmp_path, capsys):
    with_eval, _ = transformed
    head = tmp_path / "head"
    assert _train(with_eval, head, "--epochs", "1") == 0
    before = (head / "card.json").read_bytes()
    line = _refused(capsys, with_eval, head, "--epochs", "1", "--seed", "3")
    assert line.endswith(f"{head} already holds a head (card.json, model.keras); pass --overwrite to "
                         "replace it, or choose another --output")  # fmt: skip
    assert (head / "card.json").read_bytes() == before
    assert _train(with_eval, head, "--epochs", "1", "--seed", "3", "--overwrite") == 0
    assert _card(head)["training"]["seed"] == 3
