"""Dataflow readiness, proved without Google Cloud.

- Each pipeline's `run()` is launched with the DataflowRunner and `--template_location` against a local
  Cloud Storage emulator: Beam builds the complete Dataflow job (options, worker pool, SDK container,
  staged sdist and pipeline proto) and writes it to gs:// instead of submitting it - the same thing the
  flex-template launcher does. The tests read the job back and inspect it, and unpickle every DoFn of
  the staged pipeline in a fresh process, as a remote worker would.
- The worker model cache (pipelines.scoring.model_cache) against the emulator, and a scoring run with gs://
  models, inputs and outputs.
- deploy/: the Dockerfile (parsed: base image = installed Beam and Python), the flex-template metadata
  (every parameter is a flag the pipeline accepts, validation regexes match valid values) and the
  build/launch scripts in --dry_run mode.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tarfile
import threading

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, WorkerOptions
from apache_beam.portability.api import beam_runner_api_pb2

from pipelines.scoring import model_cache
from tests import fixtures_audioset, score_inputs
from tests.conftest import AUDIOSET, REPO, SEED_WAVS
from tests.gcs_emulator import running_emulator

DEPLOY = REPO / "deploy"
BUCKET = "gunshot-df-test"
PROJECT = "gunshot-test-project"
IMAGE = "us-central1-docker.pkg.dev/gunshot-test-project/gunshot/gunshot-spotter:0.1.0"
PIPELINE_MODULES = {
    "build_subset": "pipelines.build_subset",
    "score": "pipelines.score",
    "transform": "training.transform",
}


@pytest.fixture(scope="module")
def gcs():
    with running_emulator(buckets=[BUCKET]) as emulator:
        yield emulator


def dataflow_args(name: str, *extra: str) -> list[str]:
    """DataflowRunner flags that build the job and write it to gs://BUCKET/jobs/NAME.json."""
    return [
        "--runner=DataflowRunner",
        f"--project={PROJECT}",
        "--region=us-central1",
        f"--job_name=gunshot-{name.replace('_', '-')}-test",
        f"--temp_location=gs://{BUCKET}/tmp",
        f"--staging_location=gs://{BUCKET}/staging",
        f"--template_location=gs://{BUCKET}/jobs/{name}.json",
        "--machine_type=n1-standard-4",
        "--max_num_workers=7",
        *extra,
    ]


def read_job(gcs, name: str):
    """(job JSON dict, runner API pipeline proto) of a job written by dataflow_args(name)."""
    job = json.loads(gcs.read(f"gs://{BUCKET}/jobs/{name}.json"))
    options = job["environment"]["sdkPipelineOptions"]["options"]
    pipeline = beam_runner_api_pb2.Pipeline.FromString(gcs.read(options["pipelineUrl"]))
    return job, pipeline


def transform_names(pipeline) -> set[str]:
    return {t.unique_name for t in pipeline.components.transforms.values()}


def assert_dofns_unpickle_in_fresh_process(pipeline, tmp_path):
    """Every pickled DoFn of the staged pipeline loads in a new interpreter (what a remote worker does)."""
    payloads = []
    for transform in pipeline.components.transforms.values():
        if transform.spec.urn == "beam:transform:pardo:v1":
            pardo = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
            if pardo.do_fn.urn == "beam:dofn:pickled_python_info:v1":
                payloads.append((transform.unique_name, pardo.do_fn.payload))
    assert payloads
    blob = tmp_path / "dofns.json"
    blob.write_text(json.dumps([(n, p.decode("latin-1")) for n, p in payloads]))
    code = (
        "import json, sys\n"
        "from apache_beam.internal import pickler\n"
        "names = []\n"
        "for name, payload in json.load(open(sys.argv[1])):\n"
        "    fn = pickler.loads(payload.encode('latin-1'))[0]\n"
        "    names.append((name, [type(fn).__name__, repr(getattr(fn, '__dict__', ''))]))\n"
        "print(json.dumps(names))\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", code, str(blob)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    assert set(loaded) == {n for n, _ in payloads}
    return {name: kind for name, (kind, _) in loaded.items()}, " ".join(state for _, state in loaded.values())


def assert_worker_options(job, *, container: str | None, setup_file: bool):
    options = job["environment"]["sdkPipelineOptions"]["options"]
    assert options["project"] == PROJECT and options["region"] == "us-central1"
    assert options["machine_type"] == "n1-standard-4" and options["max_num_workers"] == 7
    assert "use_runner_v2" in options["experiments"]
    pool = job["environment"]["workerPools"][0]
    staged = {p["name"] for p in pool["packages"]}
    if container:
        assert options["sdk_container_image"] == container
        assert {c["containerImage"] for c in pool["sdkHarnessContainerImages"]} == {container}
    if setup_file:
        assert options["setup_file"].endswith("setup.py")
        assert "workflow.tar.gz" in staged  # the sdist built from setup.py, installed on every worker
    else:
        assert "workflow.tar.gz" not in staged
    assert job["type"] == "JOB_TYPE_BATCH"


# ---- Pipelines -> Dataflow jobs ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def audioset_shards(tmp_path_factory):
    segments = fixtures_audioset.read_segments(AUDIOSET / "eval_segments.csv", limit=300)
    return fixtures_audioset.write_shards(tmp_path_factory.mktemp("shards"), segments, num_shards=3)


@pytest.mark.slow
def test_build_subset_builds_a_dataflow_job(gcs, audioset_shards, tmp_path):
    from pipelines import build_subset

    for path in audioset_shards:
        gcs.upload(path, f"gs://{BUCKET}/audioset/eval/{os.path.basename(path)}")
    output = f"gs://{BUCKET}/subsets/v1"
    argv = [f"--split=eval=gs://{BUCKET}/audioset/eval/*.tfrecord", f"--output={output}", "--num_shards=2"]
    result = build_subset.run(argv + dataflow_args("build_subset", f"--setup_file={REPO / 'setup.py'}"))
    assert not result.has_job  # described, not submitted; run() returned without waiting
    assert gcs.list(output) == []  # nothing ran
    job, pipeline = read_job(gcs, "build_subset")
    assert_worker_options(job, container=None, setup_file=True)
    names = transform_names(pipeline)
    for step in (
        "ReadAndTag",
        "Thresholds",
        "Select",
        "WriteSubset_eval",
        "WriteTagged",
        "WriteErrors",
        "WriteStats",
    ):
        assert step in names, step
    loaded, _ = assert_dofns_unpickle_in_fresh_process(pipeline, tmp_path)
    assert {"ReadAndTag", "ComputeThresholds", "Select", "WriteStats"} <= set(loaded.values())
    # The staged sdist (what every worker pip-installs) holds the code and the package data.
    pool = job["environment"]["workerPools"][0]
    (sdist,) = [p["location"] for p in pool["packages"] if p["name"] == "workflow.tar.gz"]
    data = gcs.read("gs://" + sdist.removeprefix("storage.googleapis.com/"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    for member in (
        "setup.py",
        "requirements.txt",
        "pipelines/build_subset.py",
        "pipelines/scoring/model_cache.py",
        "gunshot_core/data/heads/1LayerLSTM__Loss=BinCE_20Epochs_july02.h5",
        "deploy/templates/score.json",
        "training/transform.py",
    ):
        assert member in members, member


@pytest.mark.slow
def test_score_builds_a_dataflow_job_with_gs_models(gcs, random_vggish, tmp_path):
    from pipelines import score

    ckpt, pca = random_vggish
    models = [gcs.upload(p, f"gs://{BUCKET}/models/{os.path.basename(p)}") for p in (ckpt, pca)]
    gcs.upload(SEED_WAVS / "pistol_shot.wav", f"gs://{BUCKET}/audio/site7/pistol_shot.wav")
    argv = [
        f"--input=gs://{BUCKET}/audio/site7/*.wav",
        f"--output=gs://{BUCKET}/scores/site7",
        f"--checkpoint={models[0]}",
        f"--pca={models[1]}",
    ]
    extra = (f"--sdk_container_image={IMAGE}", "--sdk_location=container")
    summary = score.run(argv + dataflow_args("score", *extra))
    assert summary == {"detached": True, "output": f"gs://{BUCKET}/scores/site7"}
    job, pipeline = read_job(gcs, "score")
    assert_worker_options(job, container=IMAGE, setup_file=False)
    names = transform_names(pipeline)
    for step in (
        "Match",
        "Score/Decode",
        "Score/Embed",
        "Score/GroupFrames",
        "Score/Score",
        "WriteRecordings",
        "WriteWindows",
        "WriteEvents",
        "WriteErrors",
        "Exports",
    ):
        assert step in names, step
    loaded, state = assert_dofns_unpickle_in_fresh_process(pipeline, tmp_path)
    assert "DecodeFn" in loaded.values() and "ScoreRecordingFn" in loaded.values()
    # The workers get the gs:// model paths (copied to local disk once each), not the launcher's copies.
    assert f"checkpoint='{models[0]}'" in state and f"pca='{models[1]}'" in state


@pytest.fixture(scope="module")
def local_subset(audioset_shards, tmp_path_factory):
    """A small build_subset output (local), the input of training.transform."""
    from pipelines import build_subset

    out = tmp_path_factory.mktemp("subset")
    pattern = os.path.join(os.path.dirname(audioset_shards[0]), "*.tfrecord")
    build_subset.run([f"--split=train={pattern}", f"--output={out}", "--num_shards=2"])
    return out


@pytest.mark.slow
def test_transform_builds_a_dataflow_job(gcs, local_subset, tmp_path):
    from training import transform

    # tf.Transform creates its temp dir under --output with TensorFlow's own gs:// filesystem while the
    # graph is built, and that one cannot be pointed at the emulator: the output stays local here.
    output = tmp_path / "tdir"
    argv = ["--train", f"{local_subset}/train*", "--output", str(output)]
    extra = (f"--sdk_container_image={IMAGE}", "--sdk_location=container")
    result = transform.run(argv + dataflow_args("transform", *extra))
    assert not result.has_job
    job, pipeline = read_job(gcs, "transform")
    assert_worker_options(job, container=IMAGE, setup_file=False)
    names = transform_names(pipeline)
    for step in ("MatchTrain", "DecodeTrain", "AnalyzeAndTransform", "WriteTrain", "WriteTransformFn"):
        assert step in names, step
    assert_dofns_unpickle_in_fresh_process(pipeline, tmp_path)
    assert not (output / "transform_info.json").exists()  # written by deploy.finalize after the job


# ---- gs:// end to end --------------------------------------------------------------------------------


@pytest.mark.slow
def test_score_runs_on_gs_paths(gcs, random_vggish, tmp_path):
    """Models, recordings and tables all on gs:// (DirectRunner in this process, see tests/gcs_emulator.py)."""
    from pipelines import score
    from pipelines.io import tables

    ckpt, pca = random_vggish
    models = [gcs.upload(p, f"gs://{BUCKET}/e2e/models/{os.path.basename(p)}") for p in (ckpt, pca)]
    wav = score_inputs.write_wav(tmp_path / "rec.wav", 12.0, 22050, 1)
    gcs.upload(wav, f"gs://{BUCKET}/e2e/audio/rec.wav")
    gcs.upload(SEED_WAVS / "footsteps_shuffle.wav", f"gs://{BUCKET}/e2e/audio/footsteps.wav")
    output = f"gs://{BUCKET}/e2e/scores"
    os.environ[model_cache.ENV_CACHE_DIR] = str(tmp_path / "worker-cache")
    try:
        summary = score.run(
            [
                f"--input=gs://{BUCKET}/e2e/audio/*.wav",
                f"--output={output}",
                f"--checkpoint={models[0]}",
                f"--pca={models[1]}",
            ]
        )
    finally:
        os.environ.pop(model_cache.ENV_CACHE_DIR)
    assert summary["recordings_ok"] == 2 and summary["recordings_failed"] == 0
    recordings = tables.read_table(output, "recordings").to_pylist()
    assert sorted(r["source"] for r in recordings) == [
        f"gs://{BUCKET}/e2e/audio/footsteps.wav",
        f"gs://{BUCKET}/e2e/audio/rec.wav",
    ]
    assert f"{output}/run.json" in gcs.list(output)
    cached = sorted(p.name for p in (tmp_path / "worker-cache").glob("*/*") if not p.name.endswith(".json"))
    assert cached == sorted(os.path.basename(p) for p in (ckpt, pca))  # one copy per file, reused


def test_finalize_moves_staged_score_tables(gcs, tmp_path):
    from deploy import finalize
    from pipelines import schemas
    from pipelines.io import tables
    from pipelines.scoring import outputs

    output = f"gs://{BUCKET}/finalize/scores"
    for name in schemas.SCORE_TABLES:
        local = tmp_path / f"{name}-00000-of-00001.parquet"
        import pyarrow.parquet as pq

        pq.write_table(schemas.SCORE_TABLES[name].empty_table(), local)
        gcs.upload(local, f"{output}/{outputs.STAGING}/{local.name}")
    summary = finalize.finalize_score(output)
    assert summary["recordings"] == 0
    listed = gcs.list(output)
    assert f"{output}/recordings-00000-of-00001.parquet" in listed
    assert not [p for p in listed if f"/{outputs.STAGING}/" in p]
    assert tables.read_table(output, "windows").num_rows == 0
    with pytest.raises(FileNotFoundError, match="nothing staged"):
        finalize.finalize_score(output)


# ---- Worker model cache ------------------------------------------------------------------------------


def test_model_cache_copies_once_and_follows_changes(gcs, tmp_path, monkeypatch):
    source = tmp_path / "vggish_pca_params.npz"
    source.write_bytes(os.urandom(300_000))
    uri = gcs.upload(source, f"gs://{BUCKET}/cache/vggish_pca_params.npz")
    cache = tmp_path / "cache"
    downloads = []
    real = model_cache._download
    monkeypatch.setattr(model_cache, "_download", lambda *a: (downloads.append(a[0]), real(*a)))

    # Several "processes" of one worker at once: one download, every caller gets the same file.
    results = []

    def fresh_process_call():
        results.append(model_cache.local_copy(uri, str(cache)))

    model_cache._memo.clear()
    threads = [threading.Thread(target=fresh_process_call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and downloads == [uri]
    local = results[0]
    assert pathlib.Path(local).read_bytes() == source.read_bytes()
    assert pathlib.Path(local).name == "vggish_pca_params.npz"

    model_cache._memo.clear()  # a new process on the same worker reuses the copy
    assert model_cache.local_copy(uri, str(cache)) == local and downloads == [uri]

    source.write_bytes(os.urandom(300_000))  # the object changes: the next process copies again
    gcs.upload(source, uri)
    model_cache._memo.clear()
    assert model_cache.local_copy(uri, str(cache)) == local and downloads == [uri, uri]
    assert pathlib.Path(local).read_bytes() == source.read_bytes()

    pathlib.Path(local).write_bytes(b"truncated")  # a damaged local copy is replaced
    model_cache._memo.clear()
    model_cache.local_copy(uri, str(cache))
    assert pathlib.Path(local).read_bytes() == source.read_bytes() and len(downloads) == 3
    assert not list(cache.glob("*/.part-*"))


def test_model_cache_copies_directories_and_passes_local_paths(gcs, tmp_path):
    head = tmp_path / "head"
    (head / "assets").mkdir(parents=True)
    (head / "card.json").write_text('{"format": "gunshot-spotter-head"}')
    (head / "model.keras").write_bytes(b"k" * 1000)
    (head / "assets" / "vocab.txt").write_text("gunshot\n")
    for p in head.rglob("*"):
        if p.is_file():
            gcs.upload(p, f"gs://{BUCKET}/heads/v2/{p.relative_to(head)}")
    cache = str(tmp_path / "cache")
    local = pathlib.Path(model_cache.local_copy(f"gs://{BUCKET}/heads/v2/", cache))
    assert sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()) == [
        "assets/vocab.txt",
        "card.json",
        "model.keras",
    ]
    assert model_cache.local_copy(f"gs://{BUCKET}/heads/v2", cache) == str(local)
    assert model_cache.local_copy(str(head), cache) == str(head)
    assert model_cache.local_copy(f"file://{head}", cache) == str(head)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model_cache.local_copy(f"gs://{BUCKET}/heads/missing", cache)


# ---- deploy/: Dockerfile, templates, scripts ----------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def test_dockerfile_builds_on_the_matching_beam_image_with_pins_and_models():
    steps = dockerfile_instructions()
    froms = [rest for instruction, rest in steps if instruction == "FROM"]
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert python == "3.11"
    worker_base = f"apache/beam_python{python}_sdk:{beam.__version__} AS worker"
    assert worker_base in froms
    pinned = re.search(r"^apache-beam\[gcp\]==(\S+)$", (REPO / "requirements.txt").read_text(), re.M).group(1)
    assert pinned == beam.__version__
    assert (
        f"gcr.io/dataflow-templates-base/python{python.replace('.', '')}-template-launcher-base:latest AS launcher"
        in froms
    )

    worker = steps[[i for i, s in enumerate(steps) if s == ("FROM", worker_base)][0] :]
    text = "\n".join(f"{i} {r}" for i, r in worker)
    assert re.search(r"^COPY requirements.txt ", text, re.M)
    assert "pip install --no-cache-dir -r /tmp/runtime-requirements.txt" in text
    assert "sed '/^# Development/,$d' requirements.txt" in text  # runtime pins only
    for package in ("gunshot_core", "pipelines", "training", "deploy"):
        assert re.search(rf"^COPY {package} /opt/gunshot/src/{package}$", text, re.M), package
    assert "pip install --no-cache-dir --no-deps /opt/gunshot/src" in text
    assert re.search(r"gunshot models download --dir \"\$GUNSHOT_MODELS_DIR\"", text)
    assert "vggish.read_checkpoint_tensors(models.resolve_model_paths().checkpoint)" in text  # V2 copy baked
    assert "XDG_CACHE_HOME=/opt/gunshot/cache" in text
    assert ("ARG", "BAKE_MODELS=1") in worker
    assert ("ENV", next(r for i, r in worker if i == "ENV" and "GUNSHOT_MODELS_DIR" in r)) in worker
    assert ("ENTRYPOINT", '["/opt/apache/beam/boot"]') in worker
    assert any(
        i == "COPY" and r.startswith("--from=launcher /opt/google/dataflow/python_template_launcher")
        for i, r in worker
    )

    # One launch target per pipeline, whose entry file exists and runs that pipeline's run().
    targets = {rest.split(" AS ")[1]: rest for rest in froms if rest.startswith("worker AS ")}
    assert set(targets) == {f"launch-{name.replace('_', '-')}" for name in PIPELINE_MODULES}
    envs = [r for i, r in steps if i == "ENV" and r.startswith("FLEX_TEMPLATE_PYTHON_PY_FILE=")]
    assert len(envs) == 3
    for env in envs:
        path = env.split("=", 1)[1]
        assert path.startswith("/opt/gunshot/src/deploy/flex/")
        entry = REPO / path.removeprefix("/opt/gunshot/src/")
        name = entry.stem.removesuffix("_main")
        module = PIPELINE_MODULES[name]
        source = entry.read_text()
        assert f"from {module.rsplit('.', 1)[0]} import {module.rsplit('.', 1)[1]}" in source
        assert f"{module.rsplit('.', 1)[1]}.run()" in source


def template_specs() -> dict[str, dict]:
    return {
        name: json.loads((DEPLOY / "templates" / f"{name}.json").read_text()) for name in PIPELINE_MODULES
    }


# A valid example value per template parameter; each must match the parameter's regexes and be accepted
# by the pipeline's own parser (or Beam's options) when passed the way the launcher passes it (--name=value).
EXAMPLES = {
    "input": "gs://my-bucket/audioset/eval/*.tfrecord",
    "split": "train=gs://my-bucket/audioset/bal_train/*.tfrecord;eval=gs://my-bucket/audioset/eval/*.tfrecord",
    "output": "gs://my-bucket/out/v1",
    "from_run": "gs://my-bucket/scores/archive",
    "num_shards": "4",
    "table_shards": "2",
    "positive_classes": '"Gunshot, gunfire",Machine gun',
    "negative_classes": "Fireworks,Speech",
    "positive_name": "gunshot",
    "negative_name": "no_gunshot",
    "co_occurrence": "drop",
    "segments_csv": "gs://my-bucket/eval_segments.csv",
    "label_source": "check",
    "balance": "weights",
    "ratio": "1:3",
    "max_per_class": "1000",
    "seed": "7",
    "sdk_container_image": IMAGE,
    "input_list": "gs://my-bucket/inputs.txt",
    "checkpoint": "gs://my-bucket/models/vggish_model.ckpt",
    "pca": "gs://my-bucket/models/vggish_pca_params.npz",
    "head": "gs://my-bucket/heads/v2",
    "threshold": "0.6",
    "window_seconds": "9.6",
    "hop_seconds": "4.8",
    "resampler": "resampy",
    "precision": "int8",
    "batch_size": "128",
    "chunk_seconds": "30",
    "archive_part_mb": "64",
    "skip_existing": "true",
    "write_embeddings": "true",
    "include_children": "true",
    "validate_all": "true",
    "fast_read": "on",
    "drop_leakage": "true",
    "timestamp_pattern": "%Y%m%d_%H%M%S",
    "export_clips": "3",
    "train": "gs://my-bucket/subsets/v1/train/*;gs://my-bucket/field/v1/train-*",
    "train_weight": "0.7;0.3",
    "eval": "gs://my-bucket/subsets/v1/eval/*",
    "tags": "gs://my-bucket/subsets/v1/tagged-*.parquet",
    "positive_tag": "gunshot",
    "frames": "10",
}


def pipeline_parser(name: str):
    if name == "build_subset":
        from pipelines.subset import config

        return config.build_parser()
    if name == "score":
        from pipelines.scoring import pipeline as scoring_pipeline

        return scoring_pipeline.build_parser()
    import argparse

    from training import transform

    # training.transform builds its parser inside parse_known_args: capture it there.
    holder = {}
    original = argparse.ArgumentParser.parse_known_args

    def capture(self, args=None, namespace=None):
        holder["parser"] = self
        raise SystemExit(0)

    argparse.ArgumentParser.parse_known_args = capture
    try:
        with pytest.raises(SystemExit):
            transform.parse_known_args([])
    finally:
        argparse.ArgumentParser.parse_known_args = original
    return holder["parser"]


@pytest.mark.parametrize("name", sorted(PIPELINE_MODULES))
def test_template_metadata_matches_the_pipeline_flags(name):
    spec = template_specs()[name]
    assert spec["name"] and spec["description"] and spec["streaming"] is False
    names = [p["name"] for p in spec["parameters"]]
    assert len(names) == len(set(names))
    parser = pipeline_parser(name)
    ours = {a.dest: a for a in parser._actions}
    required = {a.dest for a in parser._actions if a.required}
    for param in spec["parameters"]:
        assert set(param) <= {"name", "label", "helpText", "isOptional", "regexes"}, param
        assert param["label"] and param["helpText"], param["name"]
        value = EXAMPLES[param["name"]]
        for regex in param.get("regexes", []):
            assert re.fullmatch(regex, value), (param["name"], regex, value)
            assert not re.fullmatch(regex, "not valid\n"), (param["name"], regex)
        if param["name"] == "sdk_container_image":
            options = PipelineOptions([f"--{param['name']}={value}"])
            assert options.get_all_options()["sdk_container_image"] == value
            continue
        dest = "classes" if param["name"] == "class" else param["name"]
        action = ours.get(dest)
        assert action is not None, f"{name}: template parameter {param['name']!r} is no flag of the pipeline"
        assert f"--{param['name']}" in action.option_strings
        assert action.nargs != 0, f"{param['name']}: a bare switch cannot take a template value"
        base = [f"--{r}={EXAMPLES[r]}" for r in sorted(required) if r != dest]
        args, rest = parser.parse_known_args(base + [f"--{param['name']}={value}"])
        assert rest == [], (param["name"], rest)
        if action.const is True:  # a switch: `--flag=true|false`, as template parameters arrive
            assert param["regexes"] == ["^(true|false)$"], param["name"]
            assert getattr(args, dest) is True
            assert getattr(parser.parse_known_args(base + [f"--{param['name']}=false"])[0], dest) is False
        assert param["isOptional"] is (dest not in required), param["name"]
    assert required <= set(names), f"{name}: required flags {required - set(names)} missing from the template"


def run_script(script: str, *args: str) -> list[list[str]]:
    """Runs deploy/SCRIPT with --dry_run; returns the printed commands, each split like a shell would."""
    done = subprocess.run(
        ["bash", str(DEPLOY / script), *args], capture_output=True, text=True, timeout=60, cwd="/"
    )
    assert done.returncode == 0, done.stderr
    return [shlex.split(line) for line in done.stdout.splitlines() if line.strip()]


def test_scripts_are_strict_bash():
    for script in sorted(DEPLOY.glob("*.sh")):
        subprocess.run(["bash", "-n", str(script)], check=True)
        text = script.read_text()
        if script.name != "common.sh":
            assert "set -euo pipefail" in text and os.access(script, os.X_OK), script.name


def test_build_image_dry_run_prints_build_and_push_per_target():
    commands = run_script("build_image.sh", "--project", PROJECT, "--tag", "0.1.0", "--dry_run")
    assert commands[0][:3] == ["gcloud", "auth", "configure-docker"]
    builds = [c for c in commands if c[:2] == ["docker", "build"]]
    pushes = [c for c in commands if c[:2] == ["docker", "push"]]
    targets = [c[c.index("--target") + 1] for c in builds]
    assert targets == ["worker", "launch-build-subset", "launch-score", "launch-transform"]
    tags = [c[c.index("--tag") + 1] for c in builds]
    assert tags[0] == IMAGE and tags[1:] == [f"{IMAGE}-{t}" for t in targets[1:]]
    assert [c[2] for c in pushes] == tags
    assert all(c[c.index("--file") + 1] == "deploy/Dockerfile" and c[-1] == "." for c in builds)
    assert "BAKE_MODELS=1" in builds[0]
    no_models = run_script("build_image.sh", "--project", PROJECT, "--no_models", "--dry_run")
    assert "BAKE_MODELS=0" in [c for c in no_models if c[:2] == ["docker", "build"]][0]


def test_build_templates_dry_run_prints_one_flex_template_build_per_pipeline():
    commands = run_script(
        "build_templates.sh", "--project", PROJECT, "--bucket", "gs://my-bucket", "--dry_run"
    )
    assert len(commands) == 3
    for name, command in zip(("build_subset", "score", "transform"), commands, strict=True):
        assert command[:5] == [
            "gcloud",
            "dataflow",
            "flex-template",
            "build",
            f"gs://my-bucket/templates/{name}.json",
        ]
        flags = dict(zip(command[5::2], command[6::2], strict=True))
        assert flags["--image"] == f"{IMAGE}-launch-{name.replace('_', '-')}"
        assert flags["--sdk-language"] == "PYTHON"
        assert pathlib.Path(flags["--metadata-file"]) == DEPLOY / "templates" / f"{name}.json"
        assert flags["--project"] == PROJECT


def test_launch_template_dry_run_passes_pipeline_flags_as_parameters():
    (command,) = run_script(
        "launch.sh",
        "score",
        "--project",
        PROJECT,
        "--bucket",
        "my-bucket",
        "--job_name",
        "score-site7",
        "--max_workers",
        "30",
        "--dry_run",
        "--",
        "--input=gs://my-bucket/audio/a, b/*.wav",
        "--output",
        "gs://my-bucket/scores/site7",
        "--threshold=0.6",
    )
    assert command[:5] == ["gcloud", "dataflow", "flex-template", "run", "score-site7"]
    flags = dict(zip(command[5::2], command[6::2], strict=True))
    assert flags["--template-file-gcs-location"] == "gs://my-bucket/templates/score.json"
    assert flags["--max-workers"] == "30" and flags["--worker-machine-type"] == "n1-standard-4"
    assert flags["--parameters"].startswith("^~^")
    params = dict(p.split("=", 1) for p in flags["--parameters"][3:].split("~"))
    assert params == {
        "input": "gs://my-bucket/audio/a, b/*.wav",
        "output": "gs://my-bucket/scores/site7",
        "threshold": "0.6",
        "sdk_container_image": IMAGE,
    }
    spec = {p["name"] for p in template_specs()["score"]["parameters"]}
    assert set(params) <= spec


@pytest.mark.parametrize("mode", ["container", "setup_file"])
def test_launch_direct_dry_run_prints_a_python_command_beam_accepts(mode):
    (command,) = run_script(
        "launch.sh",
        "build_subset",
        "--mode",
        mode,
        "--project",
        PROJECT,
        "--job_name",
        "subset-v1",
        "--dry_run",
        "--",
        "--split=eval=gs://b/eval/*",
        "--output=gs://b/subsets/v1",
        "--drop_leakage",
    )
    assert command[1:3] == ["-m", "pipelines.build_subset"]
    from pipelines import options as pipelines_options
    from pipelines.subset import config

    args, beam_args = pipelines_options.split_args(config.build_parser(), command[3:])
    assert args.drop_leakage and args.output == "gs://b/subsets/v1"
    options = PipelineOptions(beam_args).get_all_options()
    assert options["runner"] == "DataflowRunner" and options["project"] == PROJECT
    assert options["job_name"] == "subset-v1"
    assert options["temp_location"] == f"gs://{PROJECT}-gunshot/tmp"
    assert PipelineOptions(beam_args).view_as(WorkerOptions).machine_type == "n1-standard-2"
    if mode == "container":
        assert options["sdk_container_image"] == IMAGE and options["sdk_location"] == "container"
        assert options["setup_file"] is None
    else:
        assert options["setup_file"] == str(REPO / "setup.py") and options["sdk_container_image"] is None


def test_launch_passes_switches_as_true_in_template_mode_and_rejects_unknown_pipelines():
    commands = run_script(
        "launch.sh",
        "score",
        "--project",
        PROJECT,
        "--dry_run",
        "--",
        "--skip_existing",
        "--input",
        "gs://b/in/",
        "--write_embeddings",
    )
    parameters = next(c[c.index("--parameters") + 1] for c in commands if "--parameters" in c)
    assert parameters.startswith("^~^")
    entries = parameters[3:].split("~")
    assert entries[:3] == ["skip_existing=true", "input=gs://b/in/", "write_embeddings=true"]
    done = subprocess.run(["bash", str(DEPLOY / "launch.sh"), "scoring"], capture_output=True, text=True)
    assert done.returncode == 2 and "build_subset score transform" in done.stderr


def test_dry_run_builds_the_job_and_returns_without_waiting(audioset_shards, tmp_path):
    """`--dry_run=True`: Beam builds the Dataflow job in memory and submits nothing; run() must not wait."""
    from pipelines import build_subset
    from pipelines.io import launch

    pattern = os.path.join(os.path.dirname(audioset_shards[0]), "*.tfrecord")
    argv = [f"--input={pattern}", f"--output={tmp_path / 'out'}"]
    result = build_subset.run(
        argv
        + [
            "--runner=DataflowRunner",
            f"--project={PROJECT}",
            "--region=us-central1",
            "--temp_location=gs://nowhere-bucket/tmp",
            "--dry_run=True",
        ]
    )
    assert launch.job_detached(result, PipelineOptions(["--dry_run=True"]))
    assert result.job.proto_pipeline.components.transforms
    assert result.job.google_cloud_options.project == PROJECT
    assert not (tmp_path / "out").exists()
