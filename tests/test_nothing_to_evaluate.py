"""Inputs that leave nothing to evaluate or to build say so in one line, name what is wrong, exit 2.

`gunshot evaluate-events` with unreadable annotations, with bad rows among good ones, and with no
annotated recording in the run (small hand-written scoring runs of tests/test_evaluate_events.py);
`gunshot dataset` with empty inputs.
"""

import logging
import warnings

import numpy as np
import pytest

from gunshot_core.errors import InputError
from tests.test_evaluate_events import A_TRUTH, _make_run, _raven, _scores_a
from training import evaluate_events as ee

BAD_RAVEN = (
    "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tAnnotation\n"
    "1\tSpectrogram 1\t1\tabc\t2.0\tgunshot\n"
    "2\tSpectrogram 1\t1\t3.0\t2.0\tgunshot\n"
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("nothing")
    _make_run(str(root / "run"), _scores_a(), np.full(10, 0.1, np.float32))
    return root / "run"


def _main(run_dir, notes, out):
    return ee.main(["--scores", f"new={run_dir}", "--annotations", str(notes), "--output", str(out)])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def test_unreadable_annotations_name_the_file_the_line_and_the_fault(run_dir, tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "rec01.Table.1.selections.txt").write_text(BAD_RAVEN)
    (notes / "bad.csv").write_text("hello world\n")
    assert _main(run_dir, notes, tmp_path / "out") == 2
    line = _one_error_line(capsys)
    assert line.startswith("gunshot evaluate-events: error: no annotation could be read")
    assert f"{notes / 'bad.csv'}: no 'file' column" in line
    assert f"{notes / 'rec01.Table.1.selections.txt'}:2: start time 'abc' is not a number" in line
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_bad_rows_among_good_ones_are_shown_file_line_reason(run_dir, tmp_path, caplog):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.Table.1.selections.txt").write_text(_raven([("site1/a.wav", *t) for t in A_TRUTH]))
    (notes / "more.csv").write_text(
        "file,start_seconds,end_seconds,label\nb.wav,soon,later,gunshot\n/data/site9/zzz.wav,1,2,gunshot\n"
    )
    with caplog.at_level(logging.WARNING):
        assert _main(run_dir, notes, tmp_path / "out") == 0
    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("2 annotation rows could not be used" in m for m in shown), shown
    assert any(m.strip().startswith(f"{notes / 'more.csv'}:2: ") and "(non_numeric)" in m for m in shown)
    assert any(f"{notes / 'more.csv'}:3: recording" in m and "(recording_not_in_run)" in m for m in shown)


def test_no_annotated_recording_in_the_run_exits_2_and_names_both_sides(run_dir, tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "other.csv").write_text(
        "file,start_seconds,end_seconds,label\n/data/site9/zzz.wav,1,2,gunshot\n/data/site9/yyy.wav,3,4,gunshot\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no matplotlib warning about empty axes: nothing is drawn
        assert _main(run_dir, notes, tmp_path / "out") == 2
    line = _one_error_line(capsys)
    assert "none of the 2 annotated recordings (/data/site9/yyy.wav, /data/site9/zzz.wav) is in" in line
    assert f"run 'new' ({run_dir}) has 4 recordings (/data/site1/a.wav, " in line
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_dataset_with_nothing_to_build_from_fails_with_a_summary(random_vggish, tmp_path):
    from pipelines.dataset import pipeline

    audio, notes = tmp_path / "audio", tmp_path / "notes"
    audio.mkdir()
    notes.mkdir()
    (notes / "rec01.Table.1.selections.txt").write_text(BAD_RAVEN)
    ckpt, pca = (str(p) for p in random_vggish)
    argv = ["--audio", str(audio), "--annotations", str(notes), "--output", str(tmp_path / "ds")]
    with pytest.raises(InputError) as caught:
        pipeline.run([*argv, "--checkpoint", ckpt, "--pca", pca], save_main_session=False)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"no training example was made (output {tmp_path / 'ds'}): 0 recordings")
    assert f"{notes / 'rec01.Table.1.selections.txt'}:2: start time 'abc' is not a number" in message
    assert (tmp_path / "ds" / "stats.json").exists()  # the tables and stats are still written
