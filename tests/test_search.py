"""gunshot search end to end: snippets inserted into synthetic field recordings, embedded by
`gunshot batch --write_embeddings` with the random-weight VGGish, then searched by example.

The expected hits and similarities are recomputed here independently (float64 dequantisation and
normalisation with numpy, Python sorting), and the pages are opened in headless Chromium.
"""

import json
import pathlib
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile
import soxr

from gunshot_core import annotations, params, similarity
from pipelines import schemas, score
from pipelines.io import embeddings_table, tables
from pipelines.search import pipeline, queries
from tests import field_sites
from tests.browser import assert_page_ok, chromium  # noqa: F401

pytestmark = pytest.mark.slow

RATE = 16000
# (recording, sample rate, format, [(insert seconds, gain)]): one gunshot snippet, inserted on the
# 0.96 s frame grid, identical in A (twice) and B, 0.8x and resampled to 44.1 kHz in C.
RECORDINGS = (
    ("recA.wav", 16000, "WAV", [(4.8, 1.0), (19.2, 1.0)]),
    ("recB.flac", 16000, "FLAC", [(9.6, 1.0)]),
    ("recC.wav", 44100, "WAV", [(14.4, 0.8)]),
)
QUERY_CUT = (4.8, 6.8)  # the query file: recA from 4.8 s (its first frame is recA's frame 5)
TOP = 6


def _snippet() -> np.ndarray:
    name, onset, x = field_sites.gunshot_snippets(RATE)[0]
    x = np.asarray(x[:RATE], np.float64)
    return 0.6 * x / np.max(np.abs(x))


@pytest.fixture(scope="module")
def archive(tmp_path_factory, random_vggish):
    root = tmp_path_factory.mktemp("search")
    audio_dir = root / "audio"
    audio_dir.mkdir()
    snippet = _snippet()
    expected = {}  # path -> frame indices holding the snippet
    for i, (name, rate, fmt, inserts) in enumerate(RECORDINGS):
        mix = field_sites.synthesize(
            "siteA", i, minutes=0.5, sample_rate=RATE, gunshots_per_minute=0, confusers_per_minute=2
        ).mix.astype(np.float64)
        for seconds, gain in inserts:
            a = int(round(seconds * RATE))
            mix[a : a + snippet.size] += gain * snippet
        mix = np.clip(mix, -1, 1)
        if rate != RATE:
            mix = soxr.resample(mix, RATE, rate)
        path = audio_dir / name
        soundfile.write(str(path), mix.astype(np.float32), rate, format=fmt, subtype="PCM_16")
        expected[str(path)] = [queries.frame_of(s) for s, _ in inserts]
    rec_a = str(audio_dir / "recA.wav")
    samples, rate = soundfile.read(rec_a, dtype="int16")
    query = root / "query.wav"
    soundfile.write(str(query), samples[int(QUERY_CUT[0] * rate) : int(QUERY_CUT[1] * rate)], rate)
    bad = root / "bad.wav"
    bad.write_bytes(np.random.default_rng(0).bytes(5000))
    batch = root / "batch"
    ckpt, pca = random_vggish
    score.run(
        [
            f"--input={audio_dir}",
            f"--output={batch}",
            "--write_embeddings",
            f"--checkpoint={ckpt}",
            f"--pca={pca}",
        ]
    )
    return {
        "root": root,
        "batch": batch,
        "query": str(query),
        "bad": str(bad),
        "recA": rec_a,
        "expected": expected,
        "models": [f"--checkpoint={ckpt}", f"--pca={pca}"],
    }


def _search(archive, output, query_args, *extra):
    argv = [f"--embeddings={archive['batch']}", f"--output={output}", f"--top={TOP}", *archive["models"]]
    argv += [f"--query={q}" for q in query_args] + list(extra)
    return pipeline.main(argv)


@pytest.fixture(scope="module")
def searched(archive):
    output = archive["root"] / "out"
    rec_a = archive["recA"]
    query_args = [
        archive["query"],  # 0: a file cut from recA at the first insertion (decoded from audio)
        f"{rec_a}@{4.8 + 0.3}",  # 1: recA's frame 5, from the table (START inside the frame)
        f"{archive['root']}/missing.wav@1",  # 2: no such file
        f"{rec_a}@300",  # 3: START beyond the end (not in the table, so decoded)
        archive["bad"],  # 4: not audio
    ]
    code = _search(archive, output, query_args)
    return output, code


def _embeddings(archive):
    table = tables.read_table(str(archive["batch"]), "embeddings")
    frames = np.frombuffer(b"".join(table.column("embedding").to_pylist()), np.uint8).reshape(-1, 128)
    return table.column("source").to_pylist(), table.column("frame_index").to_pylist(), frames


def _expected_hits(archive, query_frames: np.ndarray, own=None, top=TOP):
    """Independent top-K: float64 dequantisation, unit vectors, mean cosine over N consecutive frames."""
    sources, frame_indices, frames = _embeddings(archive)
    x = (frames.astype(np.float64) + 0.5) * (4.0 / 255.0) - 2.0
    q = (query_frames.astype(np.float64) + 0.5) * (4.0 / 255.0) - 2.0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    n = q.shape[0]
    index = {(s, f): i for i, (s, f) in enumerate(zip(sources, frame_indices, strict=True))}
    candidates = []
    for s, f in index:
        rows = [index.get((s, f + o)) for o in range(n)]
        if any(r is None for r in rows):
            continue
        if own is not None and s == own[0] and abs(f - own[1]) < n:
            continue
        sim = float(np.mean([x[r] @ q[o] for o, r in enumerate(rows)]))
        candidates.append((-sim, s, f))
    return [(s, f, -neg) for neg, s, f in sorted(candidates)[:top]]


def _hits(output):
    return tables.read_table(str(output), "hits").to_pylist()


def test_query_from_a_cut_file_finds_every_inserted_snippet(archive, searched):
    output, code = searched
    hits = [h for h in _hits(output) if h["query_index"] == 0]
    found = {(h["source"], h["frame_index"]) for h in hits[:4]}
    inserted = {(path, f) for path, frames in archive["expected"].items() for f in frames}
    assert found == inserted
    assert hits[0]["source"] == archive["recA"] and hits[0]["frame_index"] == 5
    assert hits[0]["similarity"] == pytest.approx(1.0, abs=1e-12)  # the very same samples
    assert min(h["similarity"] for h in hits[:4]) > max(h["similarity"] for h in hits[4:]) + 0.02


def test_query_from_the_table_excludes_its_own_window(archive, searched):
    output, _ = searched
    hits = [h for h in _hits(output) if h["query_index"] == 1]
    assert (archive["recA"], 5) not in {(h["source"], h["frame_index"]) for h in hits}
    others = {(p, f) for p, frames in archive["expected"].items() for f in frames} - {(archive["recA"], 5)}
    assert {(h["source"], h["frame_index"]) for h in hits[:3]} == others
    queries_table = tables.read_table(str(output), "queries").to_pylist()
    assert [q["origin"] for q in queries_table[:2]] == ["audio", "table"]
    assert queries_table[1]["frame_index"] == 5 and queries_table[1]["window_start_seconds"] == pytest.approx(
        4.8
    )


def test_hits_equal_an_independent_computation(archive, searched):
    output, _ = searched
    sources, frame_indices, frames = _embeddings(archive)
    row = {(s, f): i for i, (s, f) in enumerate(zip(sources, frame_indices, strict=True))}
    query_frames = frames[[row[(archive["recA"], 5)]]]
    hits = _hits(output)
    assert pq.read_schema(next(pathlib.Path(output).glob("hits-*.parquet"))).equals(schemas.SEARCH_HITS)
    for index, own in ((0, None), (1, (archive["recA"], 5))):
        got = [(h["source"], h["frame_index"], h["similarity"]) for h in hits if h["query_index"] == index]
        want = _expected_hits(archive, query_frames, own)
        assert [g[:2] for g in got] == [w[:2] for w in want]
        np.testing.assert_allclose([g[2] for g in got], [w[2] for w in want], rtol=0, atol=1e-12)
        assert [h["rank"] for h in hits if h["query_index"] == index] == list(range(1, TOP + 1))
        for h in hits:
            assert h["end_seconds"] == pytest.approx(h["start_seconds"] + params.FRAME_SECONDS)


def test_raven_tables_list_the_hits_in_rank_order(archive, searched):
    output, _ = searched
    hits = _hits(output)
    for index in (0, 1):
        path = output / "raven" / f"query-{index:03d}.selections.txt"
        parsed = annotations.parse_annotations(path.read_bytes(), path.name)
        assert parsed.errors == ()
        expected = [h for h in hits if h["query_index"] == index]
        assert [(a.recording_key, a.start_seconds, a.end_seconds) for a in parsed.rows] == [
            (
                h["source"],
                pytest.approx(h["start_seconds"], abs=1e-6),
                pytest.approx(h["end_seconds"], abs=1e-6),
            )
            for h in expected
        ]
        lines = path.read_text().splitlines()
        header = lines[0].split("\t")
        for line, h in zip(lines[1:], expected, strict=True):
            cells = dict(zip(header, line.split("\t"), strict=True))
            assert int(cells["Rank"]) == h["rank"]
            assert float(cells["Similarity"]) == pytest.approx(h["similarity"], abs=1e-6)
            assert cells["Annotation"] == ""
    assert not (output / "raven" / "query-002.selections.txt").exists()  # failed queries have none


def test_bad_queries_are_error_rows_not_crashes(archive, searched):
    output, code = searched
    assert code == 1  # some queries failed
    rows = {q["query_index"]: q for q in tables.read_table(str(output), "queries").to_pylist()}
    assert [rows[i]["status"] for i in range(5)] == ["ok", "ok", "error", "error", "error"]
    assert rows[2]["error_reason"] == "not_found" and "missing.wav" in rows[2]["error_message"]
    assert rows[3]["error_reason"] == "start_beyond_end" and "START 300 s" in rows[3]["error_message"]
    assert "holds frames 0-30" in rows[3]["error_message"]  # answered by the table, no decoding
    assert rows[4]["error_reason"] in ("corrupt", "unsupported")
    assert all("0x" not in (r["error_message"] or "") for r in rows.values())
    summary = json.loads((output / "search.json").read_text())["summary"]
    assert summary["queries"] == 5 and summary["queries_failed"] == 3 and summary["hits"] == 2 * TOP


def test_reruns_are_byte_identical_whatever_the_batch_size_and_workers(archive, searched, tmp_path):
    output, _ = searched
    again = tmp_path / "again"
    rec_a = archive["recA"]
    query_args = [
        archive["query"],
        f"{rec_a}@5.1",
        f"{archive['root']}/missing.wav@1",
        f"{rec_a}@300",
        archive["bad"],
    ]
    workers = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    assert _search(archive, again, query_args, "--batch_rows=7", *workers) == 1
    names = sorted(p.relative_to(output).as_posix() for p in output.rglob("*") if p.is_file())
    names.remove("search.json")  # holds the wall time and the arguments
    assert names == sorted(
        p.relative_to(again).as_posix() for p in again.rglob("*") if p.is_file() and p.name != "search.json"
    )
    for name in names:
        assert (output / name).read_bytes() == (again / name).read_bytes(), name


def test_multi_frame_windows_and_an_unreadable_table_file(archive, tmp_path):
    embeddings = tmp_path / "embeddings"
    embeddings.mkdir()
    for path in archive["batch"].glob("embeddings-*.parquet"):
        shutil.copy(path, embeddings / path.name.replace("-of-00001", "-of-00002"))
    (embeddings / "embeddings-00001-of-00002.parquet").write_bytes(b"PAR1 not really")
    output = tmp_path / "out"
    argv = [f"--embeddings={embeddings}", f"--output={output}", "--top=4", "--query_frames=2"]
    argv += [f"--query={archive['recA']}@4.8", *archive["models"]]
    assert pipeline.main(argv) == 0
    sources, frame_indices, frames = _embeddings(archive)
    row = {(s, f): i for i, (s, f) in enumerate(zip(sources, frame_indices, strict=True))}
    query_frames = frames[[row[(archive["recA"], 5)], row[(archive["recA"], 6)]]]
    want = _expected_hits(archive, query_frames, (archive["recA"], 5), top=4)
    got = [(h["source"], h["frame_index"], h["similarity"]) for h in _hits(output)]
    assert [g[:2] for g in got] == [w[:2] for w in want]
    np.testing.assert_allclose([g[2] for g in got], [w[2] for w in want], rtol=0, atol=1e-12)
    assert all(h["end_seconds"] == pytest.approx(h["start_seconds"] + 2 * 0.96) for h in _hits(output))
    errors = tables.read_table(str(output), "errors").to_pylist()
    assert [(e["source"], e["reason"]) for e in errors] == [
        (str(embeddings / "embeddings-00001-of-00002.parquet"), "unreadable")
    ]


def test_empty_embeddings_folder_is_one_clear_message(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = pipeline.main(
        [f"--embeddings={tmp_path / 'empty'}", "--query=x.wav", f"--output={tmp_path / 'o'}"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "no embeddings table" in err and "--write_embeddings" in err and "Traceback" not in err


def test_query_decoded_from_audio_equals_the_table(archive, random_vggish):
    """The same frames whether taken from the table or decoded again (also at 44.1 kHz)."""
    sources, frame_indices, frames = _embeddings(archive)
    row = {(s, f): i for i, (s, f) in enumerate(zip(sources, frame_indices, strict=True))}
    embedder = queries.QueryEmbedder(*random_vggish, resampler="soxr")
    for path in (archive["recA"], str(archive["root"] / "audio" / "recC.wav")):
        spec = queries.parse_query(f"{path}@13.5", 0, frames=3)
        got = embedder.frames(spec)
        want = frames[[row[(path, f)] for f in range(14, 17)]]
        np.testing.assert_array_equal(got, want)
    for start, frames_wanted, reason in ((300.0, 1, "start_beyond_end"), (28.9, 3, "too_short")):
        with pytest.raises(queries.QueryRangeError) as raised:
            embedder.frames(queries.parse_query(f"{archive['recA']}@{start}", 0, frames=frames_wanted))
        assert raised.value.reason == reason


def _page_ok(page) -> None:
    """assert_page_ok, except for media downloads Chromium itself cancels once it holds what
    preload="metadata" asked for (net::ERR_ABORTED on a larger WAV); such a player must still report
    its duration, which assert_page_ok checks for every player."""
    players = {src for src, duration in page.audio if duration > 0}
    page.console_errors = [
        e
        for e in page.console_errors
        if not (
            e.startswith("requestfailed:")
            and e.endswith("net::ERR_ABORTED")
            and any(src in e for src in players)
        )
    ]
    assert_page_ok(page)


def test_search_pages_in_chromium(searched, chromium):  # noqa: F811
    output, _ = searched
    index = chromium.inspect(output / "index.html", screenshot="search-index")
    assert_page_ok(index)
    assert [r[3] for r in index.tables["queries"]][:2] == [f"{TOP} hits", f"{TOP} hits"]
    page = chromium.inspect(output / "query-000.html", screenshot="search-query-000")
    _page_ok(page)
    assert len(page.tables["hits"]) == TOP
    assert len(page.images) == TOP + 1 and len(page.audio) == TOP + 1  # the query and every hit
    assert all(d == pytest.approx(2 * 1.0 + 0.96, abs=0.05) for _, d in page.audio[1:5])  # padded hits
    failed = chromium.inspect(output / "query-002.html", screenshot="search-query-002")
    _page_ok(failed)
    assert "not_found" in failed.text


def test_similarity_is_exact_and_ties_break_by_recording_then_frame():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (300, 128), dtype=np.uint8)
    frames[7] = similarity.QUANT_ZERO  # no direction: similarity 0
    got = similarity.cosine_matrix(frames, frames[:3])
    x = similarity.dequantize(frames)
    norms = np.linalg.norm(x, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        want = (x @ x[:3].T) / np.outer(norms, norms[:3])
    want[7] = 0
    np.testing.assert_allclose(got, want, atol=1e-13)
    np.testing.assert_array_equal(similarity.cosine_matrix(frames[5:9], frames[:3]), got[5:9])  # batch-free
    scores = np.array([0.5, 0.9, 0.9, 0.1, 0.9])
    sources = np.array(["b", "b", "a", "a", "a"], dtype=object)
    order = similarity.rank_top_k(scores, 3, sources, np.array([0, 1, 9, 0, 2]))
    assert order.tolist() == [4, 2, 1]


def test_search_on_gs_paths(archive, searched, tmp_path):
    """Table, query audio, hit audio and every output on gs:// (the storage emulator, in process)."""
    import pyarrow as pa

    from tests.gcs_emulator import running_emulator

    local_dir = str(archive["root"] / "audio")
    bucket = "gs://search-bucket"
    table = tables.read_table(str(archive["batch"]), "embeddings")
    moved = pa.array([s.replace(local_dir, f"{bucket}/audio") for s in table.column("source").to_pylist()])
    table = table.set_column(table.schema.get_field_index("source"), "source", moved)
    local_table = tmp_path / "embeddings-00000-of-00001.parquet"
    pq.write_table(table, local_table, compression="zstd")
    with running_emulator(buckets=["search-bucket"]) as gcs:
        gcs.upload(local_table, f"{bucket}/scores/embeddings-00000-of-00001.parquet")
        for path in pathlib.Path(local_dir).iterdir():
            gcs.upload(path, f"{bucket}/audio/{path.name}")
        gcs.upload(archive["query"], f"{bucket}/query.wav")
        argv = [
            f"--embeddings={bucket}/scores",
            f"--output={bucket}/hits",
            f"--top={TOP}",
            *archive["models"],
        ]
        argv += [f"--query={bucket}/query.wav", f"--query={bucket}/audio/recA.wav@5.1"]
        assert pipeline.main(argv) == 0
        listed = gcs.list(f"{bucket}/hits/")
        hits_bytes = gcs.read(f"{bucket}/hits/hits-00000-of-00001.parquet")
        raven = gcs.read(f"{bucket}/hits/raven/query-001.selections.txt").decode()
        page = gcs.read(f"{bucket}/hits/query-000.html").decode()
    hits = pq.read_table(pa.BufferReader(hits_bytes)).to_pylist()
    local = [h for h in _hits(searched[0]) if h["query_index"] in (0, 1)]
    assert [(h["query_index"], h["source"], h["frame_index"], h["similarity"]) for h in hits] == [
        (
            h["query_index"],
            h["source"].replace(local_dir, f"{bucket}/audio"),
            h["frame_index"],
            h["similarity"],
        )
        for h in local
    ]
    assert f"{bucket}/audio/recB.flac" in raven
    assert f"{bucket}/hits/index.html" in listed and f"{bucket}/hits/media/q000-hit001.wav" in listed
    assert "no audio" not in page  # every clip was cut from gs://


def _tiny_table(path, seed=0):
    """Three recordings of 17 frames with many exact duplicates (ties), in row groups of 5 rows."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (4, 128), dtype=np.uint8)  # 4 distinct vectors: ties everywhere
    sources, frame_index, frames = [], [], []
    for name in ("gs://b/c.wav", "gs://b/a.wav", "gs://b/b.wav"):
        for f in range(17):
            sources.append(name)
            frame_index.append(f)
            frames.append(palette[rng.integers(0, 4)])
    order = sorted(range(len(sources)), key=lambda i: (sources[i], frame_index[i]))
    sources = [sources[i] for i in order]
    frame_index = [frame_index[i] for i in order]
    frames = np.stack([frames[i] for i in order])
    table = pa.table(
        {
            "source": pa.array(sources),
            "frame_index": pa.array(frame_index, pa.int32()),
            "start_seconds": pa.array([f * 0.96 for f in frame_index]),
            "embedding": pa.array([f.tobytes() for f in frames], pa.binary(128)),
        }
    )
    pq.write_table(table, path, row_group_size=5)
    return sources, frame_index, frames


@pytest.mark.parametrize("width", [1, 3])
def test_nearest_windows_transform_breaks_ties_and_spans_row_groups(tmp_path, width):
    """The Beam transform alone (TestPipeline + assert_that): windows across row-group edges, ties
    broken by recording then frame, the query's own window excluded, batches of 4 rows."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from pipelines.search import scan

    path = str(tmp_path / "embeddings-00000-of-00001.parquet")
    sources, frame_index, frames = _tiny_table(path)
    own = ("gs://b/b.wav", 6)
    query = frames[sources.index(own[0]) + own[1] : sources.index(own[0]) + own[1] + width]
    windows = [scan.QueryWindow(0, own[0], own[1], query.tobytes())]
    x = (frames.astype(np.float64) + 0.5) * (4.0 / 255.0) - 2.0
    q = (query.astype(np.float64) + 0.5) * (4.0 / 255.0) - 2.0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    candidates = []
    for i in range(len(sources) - width + 1):
        s, f = sources[i], frame_index[i]
        if sources[i + width - 1] != s or (s == own[0] and abs(f - own[1]) < width):
            continue
        sim = float(np.mean([x[i + o] @ q[o] for o in range(width)]))
        candidates.append((-round(sim, 12), s, f))
    want = [(1 + r, s, f) for r, (_, s, f) in enumerate(sorted(candidates)[:8])]
    with TestPipeline() as p:
        rows = (
            p
            | beam.Create([path])
            | scan.NearestWindows(windows, {0: "q"}, k=8, width=width, batch_rows=4)
            | beam.Map(lambda h: (h["rank"], h["source"], h["frame_index"]))
        )
        assert_that(rows, equal_to(want))


def test_queries_that_need_models_say_what_is_wrong_with_them(tmp_path):
    from tests.conftest import SEED_WAVS

    garbage = tmp_path / "vggish_model.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    spec = queries.parse_query(f"{SEED_WAVS / 'pistol_shot.wav'}@1", 0)
    no_hashes = embeddings_table.TableInfo((), 0, (), (), ())
    with_hashes = embeddings_table.TableInfo((), 0, (), ("a" * 64,), ("b" * 64,))
    cases = [
        (no_hashes, queries.Models(problem="vggish_model.ckpt not found"), "models_missing"),
        (with_hashes, queries.Models(str(garbage), str(garbage), "c" * 64, "b" * 64), "model_mismatch"),
        (no_hashes, queries.Models(str(garbage), str(garbage), "c" * 64, "b" * 64), "model_error"),
    ]
    for table, models, reason in cases:
        (resolved,) = queries.resolve_queries([spec], table, lambda models=models: models, "soxr")
        assert not resolved.ok and resolved.reason == reason, resolved
        assert resolved.message and "0x" not in resolved.message


def test_query_without_start_uses_its_loudest_frames(archive, tmp_path):
    """A clip with the shot 2.88 s in (frame 3) and no @START queries the shot, not its first 0.96 s."""
    samples, rate = soundfile.read(archive["recA"], dtype="int16")
    clip = tmp_path / "shot_later.wav"
    soundfile.write(str(clip), samples[int(1.92 * rate) : int(6.8 * rate)], rate)  # recA frames 2-6
    output = tmp_path / "out"
    code = _search(archive, output, [str(clip), f"{clip}@0"])
    assert code == 0
    rows = tables.read_table(str(output), "queries").to_pylist()
    assert [(r["start_from"], r["frame_index"]) for r in rows] == [("loudest", 3), ("given", 0)]
    assert rows[0]["start_seconds"] == pytest.approx(3 * params.FRAME_SECONDS)
    hits = [h for h in _hits(output) if h["query_index"] == 0]
    assert (hits[0]["source"], hits[0]["frame_index"]) == (archive["recA"], 5)
    assert hits[0]["similarity"] == pytest.approx(1.0, abs=1e-12)  # the very same samples
    page = (output / "query-000.html").read_text()
    assert "the loudest frame(s) of the recording" in page
    # A table source whose audio is gone: its first frames, and the table says so.
    spec = queries.parse_query(f"{tmp_path}/gone.wav", 0, frames=2)
    assert spec.start_from == queries.START_LOUDEST
    placed = queries.place_unstarted(spec)
    assert (placed.start_from, placed.frame_index) == (queries.START_FIRST_FRAMES, 0)
    assert queries.loudest_frames(np.array([1.0, 5.0, 0.0, 2.0, 3.0]), 2) == 0
    assert queries.loudest_frames(np.array([1.0, 5.0, 0.0, 4.0, 4.0]), 2) == 3
    assert queries.loudest_frames(np.array([1.0, 5.0]), 3) == 0


def test_summary_when_the_only_query_fails(archive, tmp_path, caplog):
    """Nothing searched is said plainly, with the table's real size (not '0 hits among 0 frames')."""
    output = tmp_path / "out"
    with caplog.at_level("INFO", logger="pipelines.search.pipeline"):
        code = _search(archive, output, [f"{tmp_path}/missing.wav@1"])
    assert code == 1
    summary = json.loads((output / "search.json").read_text())["summary"]
    frames = tables.read_table(str(archive["batch"]), "embeddings").num_rows
    assert summary["table_frames"] == frames > 0
    assert summary["frames_searched"] == 0 and summary["hits"] == 0 and summary["queries_failed"] == 1
    (line,) = [
        r.getMessage() for r in caplog.records if r.name == pipeline.__name__ and r.levelname == "WARNING"
    ]
    assert f"none of the table's {frames:,} frames was searched" in line
    assert "not_found" in line and "missing.wav" in line
