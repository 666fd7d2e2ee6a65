"""--precision fp32|bf16|int8|auto: accuracy against fp32 on the golden clips, per-example results,
the int8 model cache, `auto`, and bad input handled as with fp32.

The int8 model is built once per module into a temporary cache (~15-50 s on 2 cores).
"""

import json
import pathlib

import numpy as np
import pytest

from gunshot_core import precision
from gunshot_core.postprocess import Postprocessor
from gunshot_core.vggish import VGGish
from tests.conftest import GOLDEN_CLIPS, SEED_HEADS, SEED_MODELS, head_key

CLIPS = [c for c in sorted(GOLDEN_CLIPS) if c != "short_0p5s_16k"]  # the short clip has no examples
#: Largest allowed change of a seed head's score against fp32 (docs/precision.md).
TOLERANCE = {"bf16": 0.005, "int8": 0.02}


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision-cache")
    patch = pytest.MonkeyPatch()
    patch.setattr(precision, "cache_root", lambda: root)
    yield root
    patch.undo()


@pytest.fixture(scope="module")
def models(random_vggish, int8_cache):
    """{precision: VGGish} built from the random-weight checkpoint (int8 and bf16 on OpenVINO into
    the temporary cache), and "bf16_tensorflow": bf16 where OpenVINO is not installed."""
    built = {p: VGGish.from_checkpoint(random_vggish[0], precision=p) for p in precision.PRECISIONS}
    patch = pytest.MonkeyPatch()
    patch.setattr(precision, "bf16_on_openvino", lambda flags=None: False)
    built["bf16_tensorflow"] = VGGish.from_checkpoint(random_vggish[0], precision="bf16")
    patch.undo()
    return built


@pytest.fixture(scope="module")
def postprocessor(random_vggish):
    return Postprocessor.from_npz(random_vggish[1])


@pytest.fixture(scope="module")
def seed_heads():
    from gunshot_core.heads import load_head

    return {name: load_head(str(SEED_MODELS / name)) for name in SEED_HEADS}


@pytest.mark.parametrize("name", ["bf16", "bf16_tensorflow", "int8"])
def test_seed_head_scores_stay_close_to_fp32(name, models, postprocessor, seed_heads, golden):
    """Every seed head on every golden clip: score within 0.005 (bf16, on OpenVINO or TensorFlow) /
    0.02 (int8) of fp32."""
    bound = TOLERANCE[name.split("_")[0]]
    worst = 0.0
    changed = []
    for clip in CLIPS:
        examples = golden[clip]["examples"]
        reference = postprocessor.postprocess(models["fp32"].embed(examples))
        np.testing.assert_array_equal(reference, golden[clip]["postprocessed"])  # fp32 is the reference
        frames = postprocessor.postprocess(models[name].embed(examples))
        assert frames.shape == reference.shape and frames.dtype == np.uint8
        changed.append(np.mean(frames != reference))
        for head_name, head in seed_heads.items():
            ours = float(np.asarray(head.predict(frames)).reshape(-1)[0])
            theirs = float(np.asarray(head.predict(reference)).reshape(-1)[0])
            assert abs(ours - float(golden[clip][f"score_{head_key(head_name)}"])) < bound + 2e-3
            worst = max(worst, abs(ours - theirs))
            assert abs(ours - theirs) <= bound, (clip, head_name, ours, theirs)
    assert max(changed) > 0  # the precision really ran (fp32 would change nothing)
    print(f"{name}: largest score change {worst:.4f}, uint8 values changed up to {max(changed):.1%}")


@pytest.mark.parametrize("name", ["bf16", "bf16_tensorflow", "int8"])
def test_results_do_not_depend_on_batch_grouping(name, models, golden):
    """An example's embedding is the same bits alone, in sevens or with 70 neighbours."""
    model = models[name]
    pool = np.concatenate([golden[c]["examples"] for c in CLIPS] + [precision.calibration_examples()])
    examples = pool[np.random.default_rng(7).permutation(pool.shape[0])[:70]]
    assert examples.shape[0] == 70
    together = model.embed(examples)
    in_sevens = np.concatenate([model.embed(examples[i : i + 7]) for i in range(0, 70, 7)])
    reversed_order = model.embed(examples[::-1])[::-1]
    one_by_one = np.concatenate([model.embed(examples[i : i + 1]) for i in (0, 33, 69)])
    np.testing.assert_array_equal(together, in_sevens)
    np.testing.assert_array_equal(together, reversed_order)
    np.testing.assert_array_equal(together[[0, 33, 69]], one_by_one)


@pytest.mark.parametrize("name", ["fp32", "bf16", "bf16_tensorflow", "int8"])
def test_bad_input_behaves_as_fp32(name, models):
    """Empty input and wrong shapes: the same results and errors at every precision."""
    model = models[name]
    assert model.embed(np.zeros((0, 96, 64), np.float32)).shape == (0, 128)
    with pytest.raises(ValueError, match=r"\[n, 96, 64\]"):
        model.embed(np.zeros((3, 64, 96), np.float32))
    with pytest.raises(ValueError, match=r"\[n, 96, 64\]"):
        model.embed(np.zeros((96, 64), np.float32))
    silence = model.embed(np.full((2, 96, 64), np.log(0.01), np.float32))
    assert silence.dtype == np.float32 and np.isfinite(silence).all()


def test_int8_cache_is_reused_and_rebuilt_after_damage(models, random_vggish, int8_cache, golden):
    """A second load reuses the cached model; a damaged file is detected and the model rebuilt."""
    entries = [p for p in int8_cache.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(entries) == 2  # int8 and bf16 (its float32 model)
    (entry,) = [p for p in entries if (p / "vggish_int8.xml").exists()]
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["key"]["runtime"].startswith("openvino ")
    assert set(manifest["files"]) == {"vggish_int8.xml", "vggish_int8.bin"}
    built_at = (entry / "vggish_int8.bin").stat().st_mtime_ns
    examples = golden["pistol_shot"]["examples"]
    expected = models["int8"].embed(examples)

    again = VGGish.from_checkpoint(random_vggish[0], precision="int8")  # reused: same file
    assert (entry / "vggish_int8.bin").stat().st_mtime_ns == built_at
    np.testing.assert_array_equal(again.embed(examples), expected)

    weights = entry / "vggish_int8.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = b"\x00" * 4096
    weights.write_bytes(bytes(data[: len(data) - 100]))  # overwritten and truncated
    rebuilt = VGGish.from_checkpoint(random_vggish[0], precision="int8")
    np.testing.assert_array_equal(rebuilt.embed(examples), expected)  # deterministic calibration
    rebuilt_files = json.loads((entry / "manifest.json").read_text())["files"]
    assert rebuilt_files["vggish_int8.bin"] == manifest["files"]["vggish_int8.bin"]  # the same weights
    assert not [p for p in int8_cache.iterdir() if p.name.startswith(".")]  # no staging left over


def test_cached_build_serialises_concurrent_builders(tmp_path, monkeypatch):
    """Builders in several processes at once: one builds, the others load its result."""
    import multiprocessing

    monkeypatch.setattr(precision, "cache_root", lambda: tmp_path)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as pool:
        results = pool.map(_build_in_worker, [str(tmp_path)] * 3)
    assert sorted(r[0] for r in results) == [False, False, True]  # exactly one build
    assert len({r[1] for r in results}) == 1
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1


def _build_in_worker(root):
    import time

    precision.cache_root = lambda: pathlib.Path(root)
    built = []

    def build(folder):
        time.sleep(0.3)
        (folder / "model.txt").write_text("payload")
        built.append(True)

    folder = precision.cached_build({"model": "test"}, build, lambda f: str(f))
    return bool(built), folder


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}, "int8"),  # this project's EPYC
        ({"avx2", "amx_bf16", "amx_int8", "amx_tile"}, "int8"),  # Sapphire Rapids
        ({"avx2", "avx_vnni"}, "int8"),  # Alder Lake
        ({"avx2", "avx512f", "avx512bw", "avx512_bf16"}, "bf16"),
        ({"avx2", "fma"}, "fp32"),
        (set(), "fp32"),
    ],
)
def test_auto_picks_per_cpu_flags(flags, expected, tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu {' '.join(sorted(flags))}\n\nprocessor\t: 1\n")
    assert precision.cpu_flags(str(cpuinfo)) == frozenset(flags) | {"fpu"}
    real = precision.cpu_flags
    monkeypatch.setattr(precision, "cpu_flags", lambda path=str(cpuinfo): real(path))
    assert precision.resolve("auto") == expected
    assert precision.resolve("fp32") == "fp32"
    if "avx512f" not in flags and "amx_bf16" not in flags:  # no bfloat16 kernels: bf16 refused
        with pytest.raises(precision.PrecisionError, match=r"--precision bf16 needs AVX-512"):
            precision.resolve("bf16")


def test_bf16_refused_where_onednn_is_limited_to_avx2(monkeypatch):
    """With oneDNN held to AVX2, TensorFlow has no bfloat16 convolution: refused up front, not a
    failure of every batch."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    with pytest.raises(precision.PrecisionError, match=r"oneDNN is limited to AVX2: use --precision fp32"):
        precision.resolve("bf16", {"avx512f", "avx512bw", "avx512_bf16"})
    assert precision.auto_precision({"avx512_bf16", "avx512bw"}) == "fp32"


def test_auto_without_the_int8_runtime_and_unknown_names(monkeypatch):
    monkeypatch.setattr(precision, "_version", lambda package: None)
    assert precision.auto_precision({"avx512_vnni", "avx512_bf16"}) == "bf16"
    assert precision.auto_precision({"avx512_vnni"}) == "fp32"
    with pytest.raises(precision.PrecisionError, match=r"needs openvino and nncf: pip install"):
        precision.resolve("int8")
    with pytest.raises(precision.PrecisionError, match=r"unknown precision 'fp16'"):
        precision.resolve("fp16")


def test_calibration_set_is_fixed():
    first = precision.calibration_examples()
    assert first.shape == (112, 96, 64) and first.dtype == np.float32
    assert precision.array_sha256(first) == precision.array_sha256(precision.calibration_examples())
    assert np.ptp(first.reshape(first.shape[0], -1).mean(axis=1)) > 5  # quiet to loud


def test_score_cli_errors_and_bad_input_as_fp32(models, random_vggish, tmp_path, capsys):
    """`gunshot score --precision int8`: the same exit code and error lines as fp32 for bad files,
    a score within 0.02 for a good one, and the chosen precision in the JSON."""
    from gunshot_core import score_cli

    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    files = [str(GOLDEN_CLIPS["pistol_shot"]), str(empty), str(text)]  # a missing file: exit 2 at launch
    model_args = ["--checkpoint", random_vggish[0], "--pca", random_vggish[1], "--json"]
    results = {}
    for name in ("fp32", "int8"):
        code = score_cli.main(files + model_args + ["--precision", name])
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        results[name] = (code, lines)
    (code32, fp32), (code8, int8) = results["fp32"], results["int8"]
    assert code32 == code8 == 1
    assert [r.get("error") for r in fp32] == [r.get("error") for r in int8]
    assert [r.get("reason") for r in fp32[1:]] == [r.get("reason") for r in int8[1:]]
    assert all("error" in r for r in int8[1:])
    assert abs(fp32[0]["score"] - int8[0]["score"]) <= 0.02
    assert "precision" not in fp32[0] and int8[0]["precision"] == "int8"
    with pytest.raises(SystemExit) as exit_info:  # argparse: one usage line, exit 2
        score_cli.main(files[:1] + model_args + ["--precision", "fp16"])
    assert exit_info.value.code == 2


def test_batch_int8_tables_record_precision_and_match_fp32_errors(models, random_vggish, tmp_path):
    """`gunshot batch --precision int8` on good and bad files: the same recordings statuses and
    error rows as fp32, scores within 0.02, and every table and run.json says int8 + OpenVINO;
    --skip_existing into a fp32 folder refuses to mix precisions."""
    from pipelines import score
    from pipelines.io import tables
    from tests import score_inputs

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "pistol_shot.wav").write_bytes(GOLDEN_CLIPS["pistol_shot"].read_bytes())
    broken = score_inputs.broken_files(folder)
    for case in ("five_minutes", "ogg", "mp3"):  # keep the run small: the bad inputs and one shot
        pathlib.Path(broken[case]).unlink()
    runs = {}
    for name in ("fp32", "int8"):
        out = tmp_path / name
        argv = [f"--input={folder}/*", f"--output={out}", f"--checkpoint={random_vggish[0]}"]
        argv += [f"--pca={random_vggish[1]}", f"--precision={name}", "--write_embeddings"]
        summary = score.run(argv)
        runs[name] = {
            t: tables.read_table(str(out), t).to_pylist() for t in ("recordings", "errors", "embeddings")
        }
        runs[name]["run"] = json.loads((out / "run.json").read_text())
        assert summary["recordings"] == 6
    for table in ("recordings", "errors", "embeddings"):
        assert {r["precision"] for r in runs["int8"][table]} == {"int8"}
        assert {r["embedding_runtime"].split()[0] for r in runs["int8"][table]} == {"openvino"}
        assert {r["precision"] for r in runs["fp32"][table]} == {"fp32"}
    assert runs["int8"]["run"]["precision"] == "int8" and runs["fp32"]["run"]["precision"] == "fp32"

    def key(rows, columns):
        return sorted(tuple(r[c] for c in columns) for r in rows)

    status = ("file", "status", "error_reason", "frames")
    assert key(runs["int8"]["recordings"], status) == key(runs["fp32"]["recordings"], status)
    errors = ("source", "stage", "reason", "message")
    assert key(runs["int8"]["errors"], errors) == key(runs["fp32"]["errors"], errors)
    scores = {r["file"]: r["max_score"] for r in runs["fp32"]["recordings"] if r["status"] == "ok"}
    for row in runs["int8"]["recordings"]:
        if row["status"] == "ok":
            assert abs(row["max_score"] - scores[row["file"]]) <= 0.02

    argv = [f"--input={folder}/*", f"--output={tmp_path / 'fp32'}", f"--checkpoint={random_vggish[0]}"]
    argv += [f"--pca={random_vggish[1]}", "--precision=int8", "--skip_existing"]
    with pytest.raises(ValueError, match=r"precision=\['fp32'\], this run uses 'int8'"):
        score.run(argv)

    # search and dataset take the table's precision and refuse to mix
    import argparse
    import shutil

    from pipelines.dataset import options as dataset_options
    from pipelines.io import embeddings_table
    from pipelines.search import pipeline as search_pipeline

    def table(folder):
        return embeddings_table.inspect_table(sorted(str(p) for p in folder.glob("embeddings-*.parquet")))

    int8_dir, fp32_dir, mixed = tmp_path / "int8", tmp_path / "fp32", tmp_path / "mixed"
    assert search_pipeline.query_precision(None, table(int8_dir)) == "int8"
    assert search_pipeline.query_precision("int8", table(int8_dir)) == "int8"
    with pytest.raises(
        search_pipeline.SearchError, match=r"--precision fp32 \(fp32\) differs from the embeddings' int8"
    ):
        search_pipeline.query_precision("fp32", table(int8_dir))
    mixed.mkdir()
    shutil.copy(next(int8_dir.glob("embeddings-*.parquet")), mixed / "embeddings-00000-of-00002.parquet")
    shutil.copy(next(fp32_dir.glob("embeddings-*.parquet")), mixed / "embeddings-00001-of-00002.parquet")
    with pytest.raises(search_pipeline.SearchError, match=r"precisions fp32, int8; search one precision"):
        search_pipeline.query_precision(None, table(mixed))

    def dataset_args(folder, requested=None):
        return argparse.Namespace(embeddings=str(folder), precision=requested)

    assert dataset_options.dataset_precision(dataset_args(int8_dir)) == "int8"
    with pytest.raises(precision.PrecisionError, match=r"--precision bf16 differs from the int8 embeddings"):
        dataset_options.dataset_precision(dataset_args(int8_dir, "bf16"))
    with pytest.raises(precision.PrecisionError, match=r"precisions fp32, int8; a dataset takes one"):
        dataset_options.dataset_precision(dataset_args(mixed))
    old = tmp_path / "old"  # a table written before the precision columns: fp32
    old.mkdir()
    import pyarrow.parquet as pq

    frame = pq.read_table(next(fp32_dir.glob("embeddings-*.parquet")))
    pq.write_table(frame.drop(["precision", "embedding_runtime"]), old / "embeddings-00000-of-00001.parquet")
    assert search_pipeline.query_precision(None, table(old)) == "fp32"
    assert dataset_options.dataset_precision(dataset_args(old)) == "fp32"

    # the report reads tables from before the precision columns (fp32) next to an int8 run
    from pipelines.report import build

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for path in fp32_dir.iterdir():
        if path.suffix == ".parquet":
            data = pq.read_table(path)
            pq.write_table(
                data.drop([c for c in ("precision", "embedding_runtime") if c in data.column_names]),
                legacy / path.name,
            )
    manifest = json.loads((fp32_dir / "run.json").read_text())
    for name in ("precision", "embedding_runtime"):
        manifest.pop(name)
        manifest["provenance"].pop(name)
    (legacy / "run.json").write_text(json.dumps(manifest))
    site = tmp_path / "site"
    build.run(["--scores", str(legacy), "--scores", str(int8_dir), "--output", str(site)])
    page = (site / "index.html").read_text()
    assert "<td>fp32</td>" in page.replace(" ", "") or ">fp32<" in page
    assert ">int8<" in page and "openvino" in page


def test_openvino_graph_equals_the_tensorflow_graph_in_fp32(models, random_vggish, golden):
    """The OpenVINO VGGish (before quantisation) is the same network as the TensorFlow one."""
    from gunshot_core import vggish

    weights = vggish.read_checkpoint_weights(random_vggish[0])
    network = precision.OpenVINOBlocks(vggish.build_openvino_model(weights), 64)
    examples = golden["pistol_shot"]["examples"]
    block = np.concatenate([examples, np.zeros((64 - examples.shape[0], 96, 64), np.float32)])
    ours = network(block)[: examples.shape[0]]
    np.testing.assert_allclose(ours, models["fp32"].embed(examples), atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours, golden["pistol_shot"]["raw_embedding"], atol=1e-4, rtol=0)


def test_bad_checkpoint_errors_as_fp32(models, random_vggish, tmp_path):
    """A missing, foreign or truncated checkpoint: the same ModelFileError at bf16 and int8 as at
    fp32 (OpenVINO reads a checkpoint only to build its cached model, which does not exist here)."""
    from gunshot_core.errors import ModelFileError

    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(pathlib.Path(random_vggish[0]).read_bytes()[:5_000_000])
    for path in (tmp_path / "missing.ckpt", text, truncated):
        messages = {}
        for name in ("fp32", "bf16", "int8"):
            with pytest.raises(ModelFileError) as error:
                VGGish.from_checkpoint(str(path), precision=name)
            messages[name] = str(error.value)
        assert messages["fp32"] == messages["bf16"] == messages["int8"], path


@pytest.mark.parametrize("name", ["int8", "bf16"])
def test_openvino_process_imports_neither_tensorflow_nor_the_converter(
    name, models, random_vggish, int8_cache, golden
):
    """A new process loading the cached int8 or bf16 model: no TensorFlow, no OpenVINO model
    converter, no NNCF, and the same embeddings."""
    import subprocess
    import sys

    examples = golden["pistol_shot"]["examples"][:3]
    np.save(int8_cache.parent / "examples.npy", examples)
    code = f"""
import json, pathlib, sys
import numpy as np
from gunshot_core import precision
precision.cache_root = lambda: pathlib.Path({str(int8_cache)!r})
from gunshot_core.vggish import VGGish
model = VGGish.from_checkpoint({random_vggish[0]!r}, precision={name!r})
np.save({str(int8_cache.parent / "out.npy")!r}, model.embed(np.load({str(int8_cache.parent / "examples.npy")!r})))
print(json.dumps([m for m in ("tensorflow", "openvino.tools.ovc", "nncf") if m in sys.modules]))
"""
    repo = pathlib.Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == []
    # a model loaded now: OpenVINO maps the weights file, and the damage test overwrites it in place
    # (the cache itself never does), which changes an earlier-loaded model such as models["int8"]
    fresh = VGGish.from_checkpoint(random_vggish[0], precision=name)
    np.testing.assert_array_equal(np.load(int8_cache.parent / "out.npy"), fresh.embed(examples))


def test_bf16_runs_on_openvino_from_a_cached_float32_model(models, int8_cache, golden):
    """bf16 with OpenVINO installed: the cached entry holds the float32 IR, the run records OpenVINO
    as its runtime; without OpenVINO (or without native bf16) TensorFlow runs it and is recorded."""
    assert not hasattr(models["bf16"]._forward, "get_concrete_function")  # not a tf.function
    assert hasattr(models["bf16_tensorflow"]._forward, "get_concrete_function")
    manifests = [json.loads((p / "manifest.json").read_text()) for p in int8_cache.iterdir() if p.is_dir()]
    (entry,) = [m for m in manifests if m["key"].get("stored") == "float32"]
    assert set(entry["files"]) == {"vggish_fp32.xml", "vggish_fp32.bin"}
    assert entry["key"]["runtime"].startswith(precision.embedding_runtime("bf16"))  # + build number
    assert precision.embedding_runtime("bf16").startswith("openvino ")
    assert precision.bf16_on_openvino({"avx512_bf16"}) and not precision.bf16_on_openvino({"avx512bw"})
    assert precision.uses_tensorflow("fp32") and not precision.uses_tensorflow("int8")
    assert not precision.uses_tensorflow("bf16")  # this machine: avx512_bf16 + OpenVINO
    examples = golden["pistol_shot"]["examples"]
    on_tf, on_ov = models["bf16_tensorflow"].embed(examples), models["bf16"].embed(examples)
    assert not np.array_equal(on_tf, on_ov) and np.abs(on_tf - on_ov).max() < 0.05  # two runtimes


def test_cached_model_is_hashed_once_then_checked_by_file_stats(tmp_path, monkeypatch):
    """sha256s are checked on the first load after a build; later loads compare file stats; a
    rewritten file (same size) is hashed again, found damaged and rebuilt."""
    monkeypatch.setattr(precision, "cache_root", lambda: tmp_path)
    hashed, built = [], []
    digests = precision._file_digests
    monkeypatch.setattr(precision, "_file_digests", lambda d: hashed.append(d) or digests(d))

    def build(folder):
        (folder / "model.txt").write_text("payload")
        built.append(folder)

    def load(folder):
        return (folder / "model.txt").read_text()

    assert precision.cached_build({"model": "t"}, build, load) == "payload"  # build: hashed for the manifest
    assert precision.cached_build({"model": "t"}, build, load) == "payload"  # first load: hashed, noted
    assert len(built) == 1 and len(hashed) == 2
    assert len(list(tmp_path.glob("*.verified"))) == 1
    assert precision.cached_build({"model": "t"}, build, load) == "payload"  # stats unchanged: not hashed
    assert len(hashed) == 2
    (entry,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (entry / "model.txt").write_text("damaged")  # same size, new bytes
    assert precision.cached_build({"model": "t"}, build, load) == "payload"
    assert len(built) == 2


def test_calibration_hash_is_remembered_and_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cache_root", lambda: tmp_path)
    expected = precision.array_sha256(precision.calibration_examples())
    assert precision.calibration_sha256() == expected  # computed, then remembered
    (memo,) = tmp_path.glob("calibration-*.json")

    def not_again():
        raise AssertionError("calibration examples computed again")

    monkeypatch.setattr(precision, "calibration_examples", not_again)
    assert precision.calibration_sha256() == expected
    examples = np.zeros((2, 96, 64), np.float32)
    precision.check_calibration(examples, precision.array_sha256(examples))  # matches: nothing happens
    with pytest.raises(precision.PrecisionError, match="run the command again"):
        precision.check_calibration(examples, expected)  # a stale remembered hash: forgotten
    assert not memo.exists()
