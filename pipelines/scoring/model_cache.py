"""Local copies of model files on workers: `gs://` (or any Beam filesystem) -> a local path, once per worker.

Stage: scoring 4 (embed): model files reach the workers' loaders through here.

The core loaders (`VGGish.from_checkpoint`, `Postprocessor.from_npz`, `heads.load_head`) read local
files. On Dataflow the model options are usually `gs://` paths, so a DoFn's `setup()` (or a
ModelHandler's `load_model()`) calls `local_copy(path)` first:

    self._model = VGGish.from_checkpoint(model_cache.local_copy(self._checkpoint))

- Local paths are returned unchanged (no copy).
- A remote file is downloaded once per worker machine into a cache directory (`$GUNSHOT_WORKER_CACHE`,
  default `<tmp>/gunshot-model-cache`), shared by all SDK processes of the worker: a file lock
  serialises concurrent downloads, the file is written to a temporary name and renamed into place
  (atomic), and a sidecar records the remote size and checksum. A later call (another process, a
  retried bundle, a new DoFn instance) reuses the copy when size and checksum still match and
  downloads again when the remote object changed.
- A remote "directory" (a prefix such as a head artifact `gs://b/heads/v2/` holding card.json and
  model.keras) is copied as a tree the same way.

Only Apache Beam's filesystems are used (`FileSystems.match/open/checksum`), so every scheme Beam
knows works, and tests point it at a local Cloud Storage emulator.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from gunshot_core import precision

_LOG = logging.getLogger(__name__)

ENV_CACHE_DIR = "GUNSHOT_WORKER_CACHE"
"""Environment variable naming the worker cache directory (default: <tmp>/gunshot-model-cache)."""

META_SUFFIX = ".source.json"
_BLOCK = 1 << 24  # 16 MiB per read

_memo: dict[tuple[str, str], str] = {}
_memo_lock = threading.Lock()


def is_remote(path: str) -> bool:
    """True for URLs of a non-local Beam filesystem (gs://, s3://, ...); False for local paths."""
    path = os.fspath(path)
    return "://" in path and not path.startswith("file://")


def default_cache_dir() -> str:
    """$GUNSHOT_WORKER_CACHE, else `<system temp>/gunshot-model-cache`."""
    return os.environ.get(ENV_CACHE_DIR) or os.path.join(tempfile.gettempdir(), "gunshot-model-cache")


def local_copy(path: str, cache_dir: str | None = None) -> str:
    """A local path holding the content of `path` (a local path, or a remote file or directory).

    Args:
      path: local path (returned as is, `file://` stripped), or a remote URL such as
        `gs://bucket/models/vggish_model.ckpt` or a directory prefix `gs://bucket/heads/v2/`.
      cache_dir: cache directory (default: default_cache_dir()).
    Returns:
      local path of the cached copy: `<cache_dir>/<hash of the URL>/<basename>` (a directory for a
      remote directory). Calls in the same process return the memoised path without any request.
    Raises:
      FileNotFoundError: nothing exists at `path` (the message names it).
    """
    path = os.fspath(path)
    if path.startswith("file://"):
        return path[len("file://") :]
    if not is_remote(path):
        return path
    if path.count("/") > 3:  # gs://bucket/dir/ and gs://bucket/dir name the same directory
        path = path.rstrip("/")
    cache_dir = cache_dir or default_cache_dir()
    key = (path, os.path.abspath(cache_dir))
    with _memo_lock:
        if key in _memo and os.path.exists(_memo[key]):
            return _memo[key]
    entry = os.path.join(cache_dir, hashlib.sha256(path.encode("utf-8")).hexdigest()[:20])
    os.makedirs(entry, exist_ok=True)
    name = os.path.basename(path.rstrip("/")) or "model"
    local = os.path.join(entry, name)
    with precision.file_lock(entry + ".lock"):
        files = _remote_files(path)
        if _is_current(local, files):
            _LOG.info("model cache: reusing %s for %s", local, path)
        else:
            _download(path, local, files)
    with _memo_lock:
        _memo[key] = local
    return local


def _remote_files(path: str) -> dict[str, dict]:
    """{relative name ('' for a single file): {'size', 'checksum'}} of a remote file or directory."""
    result = FileSystems.match([path])[0]
    exact = [m for m in result.metadata_list if m.path == path]
    if exact:
        return {"": {"size": exact[0].size_in_bytes, "checksum": _checksum(path)}}
    prefix = path.rstrip("/") + "/"
    files = {}
    for m in FileSystems.match([prefix + "**"])[0].metadata_list:
        relative = m.path[len(prefix) :]
        if relative and not relative.endswith("/"):
            files[relative] = {"size": m.size_in_bytes, "checksum": _checksum(m.path)}
    if not files:
        raise FileNotFoundError(f"model file {path!r} does not exist (no object, no files under it)")
    return dict(sorted(files.items()))


def _checksum(path: str) -> str | None:
    try:
        return str(FileSystems.checksum(path))
    except Exception:  # a filesystem without checksums: size alone decides
        return None


def _is_current(local: str, files: dict[str, dict]) -> bool:
    """True if `local` and its sidecar describe exactly `files` (sizes on disk checked too)."""
    try:
        with open(local + META_SUFFIX, encoding="utf-8") as f:
            recorded = json.load(f)["files"]
    except (OSError, ValueError, KeyError):
        return False
    if recorded != files:
        return False
    for relative, info in files.items():
        target = os.path.join(local, relative) if relative else local
        if not os.path.isfile(target) or os.path.getsize(target) != info["size"]:
            return False
    return True


def _download(path: str, local: str, files: dict[str, dict]) -> None:
    """Copies `files` of `path` next to `local` under temporary names, then renames into place."""
    started = time.monotonic()
    parent = os.path.dirname(local)
    staging = tempfile.mkdtemp(prefix=".part-", dir=parent)
    try:
        total = 0
        for relative, info in files.items():
            source = path.rstrip("/") + "/" + relative if relative else path
            target = os.path.join(staging, relative) if relative else os.path.join(staging, "file")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with FileSystems.open(source, compression_type=CompressionTypes.UNCOMPRESSED) as src:
                with open(target, "wb") as dst:
                    while block := src.read(_BLOCK):
                        dst.write(block)
            size = os.path.getsize(target)
            if size != info["size"]:
                raise OSError(f"copy of {source} has {size} bytes, the object has {info['size']}")
            total += size
        with contextlib.suppress(FileNotFoundError):
            os.remove(local + META_SUFFIX)
        if os.path.isdir(local) and not os.path.islink(local):
            shutil.rmtree(local)
        elif os.path.lexists(local):
            os.remove(local)
        os.replace(os.path.join(staging, "file") if "" in files else staging, local)
        meta_tmp = local + META_SUFFIX + ".tmp"
        with open(meta_tmp, "w", encoding="utf-8") as f:
            json.dump({"source": path, "files": files}, f, sort_keys=True)
        os.replace(meta_tmp, local + META_SUFFIX)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _LOG.info(
        "model cache: copied %s (%d files, %.1f MB) to %s in %.1f s",
        path,
        len(files),
        total / 1e6,
        local,
        time.monotonic() - started,
    )
