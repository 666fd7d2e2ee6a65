"""Windowing over frame sequences and the `gunshot score` command."""

import json

import numpy as np
import pytest

from gunshot_core import cli, score_cli, windows
from tests.conftest import GOLDEN_CLIPS, SEED_WAVS


class MeanHead:
    """A stand-in head whose score is the mean of the first byte of each frame / 255."""

    threshold = 0.5
    head_id = "mean"

    def predict(self, x):
        x = np.asarray(x, np.float32)
        return x[:, :, 0].mean(axis=1) / 255.0 if x.shape[1] else np.zeros(x.shape[0], np.float32)


@pytest.mark.parametrize(
    "n,window,hop,expected",
    [
        (0, 10, 5, [0]),
        (3, 10, 5, [0]),
        (10, 10, 5, [0]),
        (11, 10, 5, [0, 1]),
        (20, 10, 5, [0, 5, 10]),
        (23, 10, 5, [0, 5, 10, 13]),
        (12, 10, 1, [0, 1, 2]),
    ],
)
def test_window_starts_cover_every_frame(n, window, hop, expected):
    starts = windows.window_starts(n, window, hop)
    assert starts.tolist() == expected
    covered = set()
    for s in starts:
        covered.update(range(s, min(s + window, n)))
    assert covered == set(range(n))


def test_windows_are_views_and_scores_follow_frames():
    frames = np.zeros((23, 128), np.uint8)
    frames[:, 0] = np.arange(23)
    view = windows.window_view(frames, 10)
    assert view.shape == (14, 10, 128) and np.shares_memory(view, frames)
    np.testing.assert_array_equal(view[13, :, 0], np.arange(13, 23))
    assert windows.window_view(frames[:3], 10).shape == (1, 3, 128)
    scored = windows.score_frames(MeanHead(), frames, 10, 5)
    np.testing.assert_allclose(scored.scores, [4.5 / 255, 9.5 / 255, 14.5 / 255, 17.5 / 255], rtol=1e-6)
    assert scored.peak() == (3, pytest.approx(17.5 / 255))
    np.testing.assert_allclose(scored.end_seconds, np.array([10, 15, 20, 23]) * 0.96)


def test_short_and_empty_recordings_are_one_window():
    short = windows.score_frames(MeanHead(), np.full((3, 128), 51, np.uint8), 10, 5)
    assert short.scores.tolist() == [pytest.approx(0.2)] and short.ends.tolist() == [3]
    empty = windows.score_frames(MeanHead(), np.zeros((0, 128), np.uint8), 10, 5)
    assert empty.scores.shape == (1,) and empty.starts.tolist() == [0]


def test_seconds_to_frames():
    assert windows.seconds_to_frames(10.0) == 10
    assert windows.seconds_to_frames(4.8) == 5
    assert windows.seconds_to_frames(0.1) == 1
    with pytest.raises(ValueError, match="hop"):
        windows.seconds_to_frames(0, name="hop")


def _run(capsys, argv):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def cli_models(random_vggish):
    checkpoint, pca = random_vggish
    return ["--checkpoint", checkpoint, "--pca", pca]


def test_score_cli_matches_golden_and_reports_failures(capsys, cli_models, golden, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    files = [str(GOLDEN_CLIPS[name]) for name in ("pistol_shot", "footsteps_shuffle", "short_0p5s_16k")]
    code, out, err = _run(capsys, ["score", *files, str(bad), "--json", *cli_models])
    assert code == 1  # one file failed
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 4
    by_file = {row["file"]: row for row in rows}
    for name in ("pistol_shot", "footsteps_shuffle", "short_0p5s_16k"):
        row = by_file[str(GOLDEN_CLIPS[name])]
        expected = float(golden[name]["score_1LayerLSTM__Loss_BinCE_20Epochs_july02"])
        assert row["score"] == pytest.approx(expected, abs=0.01)
        assert row["threshold"] == pytest.approx(0.51) and row["detected"] is (row["score"] >= 0.51)
        assert row["windows"] == 1 and row["seconds"] >= 0
    assert by_file[str(bad)]["reason"] in ("corrupt", "unsupported")


def test_score_cli_reference_resampler_is_exact(capsys, cli_models, golden):
    code, out, _ = _run(
        capsys, ["score", str(GOLDEN_CLIPS["pistol_shot"]), "--json", "--resampler", "resampy", *cli_models]
    )
    assert code == 0
    score = json.loads(out)["score"]
    assert score == pytest.approx(
        float(golden["pistol_shot"]["score_1LayerLSTM__Loss_BinCE_20Epochs_july02"]), abs=2e-3
    )


def test_score_cli_long_file_reports_peak_window(capsys, cli_models, tmp_path):
    import soundfile

    long_wav = tmp_path / "long.wav"
    a, rate = soundfile.read(str(SEED_WAVS / "spanishclass.wav"))
    b, _ = soundfile.read(str(SEED_WAVS / "ultimate_gunshot.wav"))
    soundfile.write(str(long_wav), np.concatenate([a, b, a]), rate)
    code, out, _ = _run(capsys, ["score", str(long_wav), "--threshold", "0.0", *cli_models])
    assert code == 0
    assert "max of" in out and "GUNSHOT" in out  # threshold 0 -> detected


def test_score_cli_missing_models_is_one_clear_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("GUNSHOT_MODELS_DIR", str(tmp_path))
    for var in ("GUNSHOT_VGGISH_CHECKPOINT", "GUNSHOT_PCA_PARAMS"):
        monkeypatch.delenv(var, raising=False)
    code, out, err = _run(capsys, ["score", str(GOLDEN_CLIPS["pistol_shot"])])
    assert code == 2 and out == ""
    assert "gunshot models download" in err and len(err.strip().splitlines()) == 1


def test_dispatcher_help_and_unknown_command(capsys):
    code, out, _ = _run(capsys, ["--help"])
    assert code == 0 and all(name in out for name in cli.COMMANDS)
    code, _, err = _run(capsys, ["frobnicate"])
    assert code == 2 and "unknown command" in err
    with pytest.raises(SystemExit) as exit_:
        score_cli.main(["--help"])
    assert exit_.value.code == 0
