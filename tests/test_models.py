"""Tests of gunshot_core.models against a local HTTP server with Range support and injected faults."""

import hashlib
import http.server
import io
import json
import os
import threading

import numpy as np
import pytest

from gunshot_core import hashes, models
from gunshot_core.errors import DownloadError, ModelFileError
from gunshot_core.heads import DEFAULT_HEAD_PATH


def _npz_bytes() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buf, pca_eigen_vectors=rng.standard_normal((128, 128)), pca_means=rng.standard_normal((128, 1)))
    return buf.getvalue()


CKPT = bytes(np.random.default_rng(1).integers(0, 256, size=300_000, dtype=np.uint8))
PCA = _npz_bytes()


class _Server:
    """State shared with the handler: served files, faults to inject, and a log of requests."""

    def __init__(self):
        self.files = {models.CHECKPOINT_NAME: CKPT, models.PCA_NAME: PCA}
        self.fail_500 = {}  # name -> number of 500 answers still to give
        self.cut_after = {}  # name -> send only this many bytes of the next body, then drop the connection
        self.ignore_range = False
        self.log = []  # (name, Range header or None)


def _handler(state: _Server):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            name = self.path.rsplit("/", 1)[-1]
            requested = self.headers.get("Range")
            state.log.append((name, requested))
            if state.fail_500.get(name):
                state.fail_500[name] -= 1
                return self._reply(500, b"transient")
            if name not in state.files:
                return self._reply(404, b"no such file")
            data = state.files[name]
            start = 0
            if requested and not state.ignore_range:
                start = int(requested.split("=")[1].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = state.cut_after.pop(name, None)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

        def _reply(self, code, body):
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server():
    state = _Server()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/audioset"
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def fake_registry(monkeypatch, tmp_path):
    """Small known files (the checkpoint with a known size and hash, the PCA file with neither), no back-off
    delay, and no model-related environment from the machine running the tests."""
    registry = {
        models.CHECKPOINT_NAME: models.KnownFile(
            models.CHECKPOINT_NAME,
            "vggish_checkpoint",
            "fake checkpoint",
            len(CKPT),
            hashlib.sha256(CKPT).hexdigest(),
        ),
        models.PCA_NAME: models.KnownFile(models.PCA_NAME, "pca_params", "fake PCA"),
    }
    monkeypatch.setattr(models, "KNOWN_FILES", registry)
    monkeypatch.setattr(models, "RETRY_BACKOFF_SECONDS", 0.0)
    monkeypatch.setattr(models, "TIMEOUT_SECONDS", 10.0)
    for env in (models.ENV_BASE_URL, models.ENV_CHECKPOINT, models.ENV_PCA, models.ENV_HEAD):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv(models.ENV_MODELS_DIR, str(tmp_path / "models"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))  # the cross-process hash cache
    monkeypatch.setattr(hashes, "_sha_cache", {})
    return registry


def test_download_fetches_verifies_and_records(server, tmp_path):
    paths = models.download(url=server.url, progress=False)
    root = tmp_path / "models"
    assert paths == {n: str(root / n) for n in (models.CHECKPOINT_NAME, models.PCA_NAME)}
    assert (root / models.CHECKPOINT_NAME).read_bytes() == CKPT and (
        root / models.PCA_NAME
    ).read_bytes() == PCA
    assert not list(root.glob("*.part"))
    manifest = models.read_manifest(root)
    assert (
        manifest[models.PCA_NAME]["sha256"] == hashlib.sha256(PCA).hexdigest()
    )  # recorded on first download
    assert manifest[models.PCA_NAME]["size"] == len(PCA)
    assert manifest[models.CHECKPOINT_NAME]["url"] == f"{server.url}/{models.CHECKPOINT_NAME}"


def test_present_files_are_not_downloaded_again_without_force(server):
    models.download(url=server.url, progress=False)
    server.log.clear()
    models.download(url=server.url, progress=False)
    assert server.log == []
    models.download(url=server.url, force=True, progress=False)
    assert len(server.log) == 2


def test_resume_from_partial_file(server, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    (root / (models.CHECKPOINT_NAME + ".part")).write_bytes(CKPT[:123_456])
    models.download([models.CHECKPOINT_NAME], url=server.url, progress=False)
    assert server.log == [(models.CHECKPOINT_NAME, "bytes=123456-")]
    assert (root / models.CHECKPOINT_NAME).read_bytes() == CKPT


def test_dropped_connection_is_resumed(server, tmp_path):
    server.cut_after[models.CHECKPOINT_NAME] = 100_000
    models.download([models.CHECKPOINT_NAME], url=server.url, progress=False)
    assert server.log == [(models.CHECKPOINT_NAME, None), (models.CHECKPOINT_NAME, "bytes=100000-")]
    assert (tmp_path / "models" / models.CHECKPOINT_NAME).read_bytes() == CKPT


def test_complete_part_file_and_416_answer(server, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    (root / (models.CHECKPOINT_NAME + ".part")).write_bytes(CKPT)
    models.download([models.CHECKPOINT_NAME], url=server.url, progress=False)
    assert (root / models.CHECKPOINT_NAME).read_bytes() == CKPT


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    (root / (models.CHECKPOINT_NAME + ".part")).write_bytes(b"stale bytes")
    server.ignore_range = True
    models.download([models.CHECKPOINT_NAME], url=server.url, progress=False)
    assert (root / models.CHECKPOINT_NAME).read_bytes() == CKPT


def test_retry_after_transient_500s(server, tmp_path):
    server.fail_500[models.PCA_NAME] = 2
    models.download([models.PCA_NAME], url=server.url, progress=False)
    assert [entry[0] for entry in server.log] == [models.PCA_NAME] * 3
    assert (tmp_path / "models" / models.PCA_NAME).read_bytes() == PCA


def test_retries_exhausted_raise(server, monkeypatch, tmp_path):
    monkeypatch.setattr(models, "RETRIES", 2)
    server.fail_500[models.PCA_NAME] = 10
    with pytest.raises(DownloadError, match="after 3 attempts: HTTP 500"):
        models.download([models.PCA_NAME], url=server.url, progress=False)
    assert len(server.log) == 3 and not (tmp_path / "models" / models.PCA_NAME).exists()


def test_retries_exhausted_mention_only_a_part_file_that_exists(server, monkeypatch, tmp_path):
    monkeypatch.setattr(models, "RETRIES", 1)
    server.fail_500[models.PCA_NAME] = 10
    with pytest.raises(DownloadError) as info:
        models.download([models.PCA_NAME], url=server.url, progress=False)
    assert ".part" not in str(info.value) and "when the connection works" in str(info.value)
    assert not list((tmp_path / "models").glob("*.part"))


def test_offline_download_fails_at_once(monkeypatch, tmp_path, capsys):
    """A host name that cannot be resolved (no network) is not retried for half a minute."""
    import socket
    import urllib.error

    calls = []

    def offline(request, timeout=None):
        calls.append(request.full_url)
        raise urllib.error.URLError(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))

    monkeypatch.setattr(models.urllib.request, "urlopen", offline)
    monkeypatch.setattr(models, "RETRY_BACKOFF_SECONDS", 10.0)  # a retry would show as a slow test
    assert models.main(["download", "--base-url", "https://mirror.invalid", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(calls) == 1 and len(err.splitlines()) == 1, err
    assert err.startswith("gunshot models: error: cannot reach mirror.invalid") and "no network?" in err
    assert "--base-url URL" in err  # the fix on a machine without internet but with a mirror
    assert ".part" not in err and not list((tmp_path / "models").glob("*.part"))


def test_list_honours_the_environment_overrides(tmp_path, monkeypatch, capsys):
    ckpt, pca = tmp_path / "my.ckpt", tmp_path / "my_pca.npz"
    ckpt.write_bytes(b"c" * 10)
    pca.write_bytes(b"p" * 7)
    monkeypatch.setenv(models.ENV_CHECKPOINT, str(ckpt))
    monkeypatch.setenv(models.ENV_PCA, str(pca))
    assert models.main(["list"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.endswith(str(ckpt)))
    assert line.split()[0] == "ok" and "$GUNSHOT_VGGISH_CHECKPOINT" in line and " 10 B " in line
    assert str(pca) in out and "missing" not in out
    monkeypatch.setenv(models.ENV_PCA, str(tmp_path / "gone.npz"))
    assert models.main(["list"]) == 1
    captured = capsys.readouterr()
    assert (
        "missing" in captured.out and f"$GUNSHOT_PCA_PARAMS points to {tmp_path / 'gone.npz'}" in captured.err
    )


def test_not_found_is_not_retried(server, tmp_path):
    del server.files[models.PCA_NAME]
    with pytest.raises(DownloadError, match="HTTP 404"):
        models.download([models.PCA_NAME], url=server.url, progress=False)
    assert len(server.log) == 1


def test_checksum_mismatch_leaves_no_file(server, fake_registry, monkeypatch, tmp_path):
    wrong = models.KnownFile(models.CHECKPOINT_NAME, "vggish_checkpoint", "x", len(CKPT), "0" * 64)
    monkeypatch.setitem(fake_registry, models.CHECKPOINT_NAME, wrong)
    with pytest.raises(DownloadError, match="does not match the expected 0000"):
        models.download([models.CHECKPOINT_NAME], url=server.url, progress=False)
    assert list((tmp_path / "models").iterdir()) == []


def test_size_mismatch_is_refused(server, fake_registry, monkeypatch, tmp_path):
    short = models.KnownFile(models.CHECKPOINT_NAME, "vggish_checkpoint", "x", len(CKPT) + 1)
    monkeypatch.setitem(fake_registry, models.CHECKPOINT_NAME, short)
    with pytest.raises(DownloadError, match="expected 300001"):
        models.download([models.CHECKPOINT_NAME], url=server.url, progress=False)
    assert not (tmp_path / "models" / models.CHECKPOINT_NAME).exists()


def test_changed_upstream_file_is_refused_against_the_manifest(server, tmp_path):
    models.download([models.PCA_NAME], url=server.url, progress=False)
    server.files[models.PCA_NAME] = PCA[:-1] + bytes([PCA[-1] ^ 1])
    with pytest.raises(DownloadError, match="does not match"):
        models.download([models.PCA_NAME], url=server.url, force=True, progress=False)
    assert (tmp_path / "models" / models.PCA_NAME).read_bytes() == PCA  # the good copy is untouched


def test_base_url_from_env_and_flag(server, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(models.ENV_BASE_URL, server.url + "/")
    models.download([models.PCA_NAME], progress=False)
    assert server.log == [(models.PCA_NAME, None)]
    monkeypatch.setenv(models.ENV_BASE_URL, "http://127.0.0.1:9/unreachable")
    code = models.main(["download", "--dir", str(tmp_path / "other"), "--base-url", server.url, "--quiet"])
    assert code == 0 and (tmp_path / "other" / models.CHECKPOINT_NAME).read_bytes() == CKPT
    assert str(tmp_path / "other" / models.PCA_NAME) in capsys.readouterr().out


def test_download_progress_goes_to_stderr(server, capsys):
    assert models.main(["download", "--base-url", server.url, models.CHECKPOINT_NAME]) == 0
    captured = capsys.readouterr()
    assert "100.0%" in captured.err and "vggish_model.ckpt" in captured.err


def test_list_reports_missing_partial_and_ok(server, tmp_path, capsys):
    root = tmp_path / "models"
    assert models.main(["list"]) == 1
    out = capsys.readouterr()
    assert f"models dir: {root}" in out.out and "missing" in out.out and "gunshot models download" in out.err
    root.mkdir()
    (root / (models.PCA_NAME + ".part")).write_bytes(b"x")
    models.main(["list"])
    assert "partial" in capsys.readouterr().out
    models.download(url=server.url, progress=False)
    assert models.main(["list", "--verify"]) == 0
    out = capsys.readouterr().out
    assert out.count("ok ") >= 3 and f"{len(CKPT):,} B" in out and DEFAULT_HEAD_PATH in out
    (root / models.PCA_NAME).write_bytes(PCA[:-1] + b"!")  # same size, different content
    assert models.main(["list", "--verify"]) == 1
    assert "sha256_mismatch" in capsys.readouterr().out


def test_info_describes_files_and_heads(server, tmp_path, capsys):
    models.download(url=server.url, progress=False)
    assert models.main(["info", models.PCA_NAME]) == 0
    out = capsys.readouterr().out
    assert "kind: pca_params" in out and "pca_eigen_vectors: float64 [128, 128]" in out
    assert f"sha256: {hashlib.sha256(PCA).hexdigest()}" in out
    assert models.main(["info", "head", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["threshold"] == 0.51 and info["frames"] is None and info["kind"] == "keras2_h5"
    assert any(layer.startswith("LSTM(128") for layer in info["layers"])
    assert models.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "kind: vggish_checkpoint" in out and "head_id: 1LayerLSTM__Loss=BinCE_20Epochs_july02" in out
    assert models.main(["info", str(tmp_path / "nope.h5")]) == 2  # a user error: one line, exit 2
    assert "no such file" in capsys.readouterr().err


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as exc:
        models.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "GUNSHOT_VGGISH_CHECKPOINT" in out and "download" in out and "manifest.json" in out
    assert models.main([]) == 2


def test_resolve_model_paths_precedence(tmp_path, monkeypatch):
    root = tmp_path / "models"
    root.mkdir()
    for name in (models.CHECKPOINT_NAME, models.PCA_NAME):
        (root / name).write_bytes(b"cached")
    explicit = tmp_path / "explicit.ckpt"
    from_env = tmp_path / "env.ckpt"
    head = tmp_path / "head.h5"
    for p in (explicit, from_env, head):
        p.write_bytes(b"x")
    paths = models.resolve_model_paths()
    assert paths == models.ModelPaths(
        str(root / models.CHECKPOINT_NAME), str(root / models.PCA_NAME), DEFAULT_HEAD_PATH
    )
    monkeypatch.setenv(models.ENV_CHECKPOINT, str(from_env))
    monkeypatch.setenv(models.ENV_HEAD, str(head))
    paths = models.resolve_model_paths()
    assert (
        paths.checkpoint == str(from_env)
        and paths.head == str(head)
        and paths.pca == str(root / models.PCA_NAME)
    )
    paths = models.resolve_model_paths(checkpoint=explicit, head=DEFAULT_HEAD_PATH)
    assert paths.checkpoint == str(explicit) and paths.head == DEFAULT_HEAD_PATH
    assert models.resolve_model_paths(pca="gs://bucket/pca.npz").pca == "gs://bucket/pca.npz"
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.delenv(models.ENV_CHECKPOINT)
    with pytest.raises(ModelFileError, match=r"run `gunshot models download`.*--checkpoint"):
        models.resolve_model_paths(directory=other)
    with pytest.raises(ModelFileError, match="--pca points to .*missing.npz"):
        models.resolve_model_paths(pca=tmp_path / "missing.npz")
    monkeypatch.setenv(models.ENV_HEAD, str(tmp_path / "gone.h5"))
    with pytest.raises(ModelFileError, match=r"\$GUNSHOT_HEAD points to"):
        models.resolve_model_paths()


def test_models_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv(models.ENV_MODELS_DIR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.default_models_dir() == tmp_path / "xdg" / "gunshot-spotter" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.default_models_dir() == tmp_path / "home" / ".cache" / "gunshot-spotter" / "models"


def test_file_sha256_streams_and_notices_changes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(CKPT)
    assert hashes.file_sha256(path) == hashlib.sha256(CKPT).hexdigest()
    path.write_bytes(b"changed")
    os.utime(path, ns=(1, 1))
    assert hashes.file_sha256(str(path)) == hashlib.sha256(b"changed").hexdigest()
    with pytest.raises(ModelFileError, match="cannot read"):
        hashes.file_sha256(tmp_path / "missing")


def test_info_follows_env_overrides(tmp_path, monkeypatch, capsys):
    pca = tmp_path / "custom_pca.npz"
    pca.write_bytes(PCA)
    monkeypatch.setenv(models.ENV_PCA, str(pca))
    assert models.main(["info", models.PCA_NAME]) == 0
    assert f"path: {pca}" in capsys.readouterr().out
    assert models.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"path: {pca}" in out and "kind: vggish_checkpoint" not in out  # no checkpoint installed


def test_hashes_are_kept_across_processes_and_recomputed_when_the_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    first = hashes.file_sha256(path)
    assert first == hashlib.sha256(b"a" * 1000).hexdigest()
    assert first in json.loads(hashes.hash_cache_path().read_text()).values()

    def no_hashing(*args):
        raise AssertionError("the file was hashed again")

    monkeypatch.setattr(hashes, "_sha_cache", {})  # a new process: only the file cache is left
    with monkeypatch.context() as m:
        m.setattr(hashes.hashlib, "sha256", no_hashing)
        assert hashes.file_sha256(path) == first
    path.write_bytes(b"b" * 1000)  # same size, new content and mtime
    os.utime(path, ns=(1, 2))
    assert hashes.file_sha256(path) == hashlib.sha256(b"b" * 1000).hexdigest()
    with monkeypatch.context() as m:  # verification never trusts a cache
        m.setattr(hashes.hashlib, "sha256", no_hashing)
        with pytest.raises(AssertionError, match="hashed again"):
            hashes.file_sha256(path, cache=False)


def test_download_records_the_hash_of_the_final_file(server, monkeypatch):
    paths = models.download(url=server.url, progress=False)
    expected = hashlib.sha256(CKPT).hexdigest()
    monkeypatch.setattr(hashes, "_sha_cache", {})
    with monkeypatch.context() as m:
        m.setattr(hashes.hashlib, "sha256", lambda *a: pytest.fail("hashed again after download"))
        assert hashes.file_sha256(paths[models.CHECKPOINT_NAME]) == expected


def test_an_unwritable_hash_cache_is_skipped(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    path = tmp_path / "f.bin"
    path.write_bytes(b"x")
    assert hashes.file_sha256(path) == hashlib.sha256(b"x").hexdigest()
