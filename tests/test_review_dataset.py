"""Review verdicts feed the training set: `gunshot dataset --annotations REVIEW_DIR/verdicts.csv
--label_column verdict --positive yes --negative no` (Beam, random-weight VGGish)."""

import json

from gunshot_core import annotations, cli
from pipelines.review import sample, verdicts
from tests.review_runs import make_run


def test_verdicts_become_training_examples(tmp_path, random_vggish):
    truth = make_run(tmp_path / "run", tmp_path / "audio", sites=("siteA",), recordings_per_site=1, seed=2)
    review = tmp_path / "review"
    assert (
        cli.main(
            ["review", "sample", "--scores", str(tmp_path / "run"), "--output", str(review), "--size", "12"]
        )
        == 0
    )
    is_gunshot = {(w["source"], round(w["start_seconds"], 3)): w["truth"] for w in truth["windows"]}
    rows = sample.read_sample(str(review))
    answers = {}
    for k, row in enumerate(rows):
        verdict = "yes" if is_gunshot[(row["source"], round(float(row["start_seconds"]), 3))] else "no"
        if k == 0:  # answered wrong first, then corrected: the first answer is superseded
            verdicts.append_verdict(str(review), {**row, "verdict": "unsure", "reviewer": "ana"})
        if k == 1:
            verdict = "unsure"  # neither label: no example
        verdicts.append_verdict(str(review), {**row, "verdict": verdict, "reviewer": "ana"})
        answers[row["item_id"]] = verdict
    ckpt, pca = random_vggish
    out = tmp_path / "dataset"
    argv = [
        "dataset", "--audio", str(tmp_path / "audio"), "--annotations", str(review / verdicts.VERDICTS_CSV),
        "--label_column", "verdict", "--positive", "yes", "--negative", "no", "--window_frames", "1",
        "--split", "train=1", "--output", str(out), "--checkpoint", ckpt, "--pca", pca,
    ]  # fmt: skip
    assert cli.main(argv) == 0
    stats = json.loads((out / "stats.json").read_text())
    tags = stats["splits"]["train"]["tags"]
    assert tags.get("gunshot", 0) == sum(v == "yes" for v in answers.values()) > 0
    assert tags.get("no_gunshot", 0) >= 1
    assert stats["errors"].get(annotations.SUPERSEDED) == 1
