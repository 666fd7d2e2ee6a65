"""File hashes (sha256) of model files, cached in the process and across processes.

Stage: models (integrity). Hashing the 288 MB VGGish checkpoint costs ~0.17 s, so `file_sha256`
remembers hashes keyed by (real path, size, mtime, inode), in memory and in
`user_cache_dir()/file-hashes.json`. `gunshot_core.models` (downloads) and `gunshot_core.heads`
(head cards) both use it; it imports neither.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import tempfile
import threading

from gunshot_core.errors import ModelFileError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def _is_url(path: str) -> bool:
    return "://" in str(path)


_sha_cache: dict[tuple, str] = {}
_sha_lock = threading.Lock()
#: Hashes are also kept across processes in this file of the user's cache folder, keyed by the
#: file's real path, size, mtime and inode: hashing the 288 MB checkpoint costs ~0.17 s at every
#: job or `gunshot score` start otherwise. `gunshot models download` fills it.
HASH_CACHE_FILE = "file-hashes.json"
_HASH_CACHE_ENTRIES = 256


def user_cache_dir() -> pathlib.Path:
    """$XDG_CACHE_HOME/gunshot-spotter, else ~/.cache/gunshot-spotter (hashes, derived model files)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(cache) / "gunshot-spotter"


def hash_cache_path() -> pathlib.Path:
    return user_cache_dir() / HASH_CACHE_FILE


def _read_hash_cache() -> dict:
    try:
        data = json.loads(hash_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_hash_cache(key: str, value: str) -> None:
    """Adds one entry (keeping the newest _HASH_CACHE_ENTRIES); a cache that cannot be written is skipped."""
    path = hash_cache_path()
    try:
        entries = _read_hash_cache()
        entries.pop(key, None)
        entries[key] = value
        entries = dict(list(entries.items())[-_HASH_CACHE_ENTRIES:])
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
            json.dump(entries, f, indent=0, sort_keys=False)
        os.replace(f.name, path)
    except OSError as e:
        log.debug("hash cache %s not written: %s", path, e)


def _cache_key(path: str) -> tuple:
    try:
        st = os.stat(path)
    except OSError as e:
        raise ModelFileError(f"cannot read {path!r}: {e}") from e
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)


def remember_sha256(path, value: str) -> None:
    """Records a file's sha256, computed by the caller, in both hash caches."""
    key = _cache_key(os.fspath(path))
    with _sha_lock:
        _sha_cache[key] = value
    _write_hash_cache("|".join(map(str, key)), value)


def file_sha256(path, *, cache: bool = True) -> str:
    """Hex sha256 of a file, streamed; cached by (real path, size, mtime, inode), also across processes
    (HASH_CACHE_FILE). `cache=False` reads the file whatever the caches hold (verification). URLs
    (gs://) are read with tf.io.gfile and not cached."""
    path = os.fspath(path)
    if _is_url(path):
        import tensorflow as tf

        digest = hashlib.sha256()
        with tf.io.gfile.GFile(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()
    key = _cache_key(path)
    persisted_key = "|".join(map(str, key))
    value = None
    if cache:
        with _sha_lock:
            value = _sha_cache.get(key)
        if value is None:
            value = _read_hash_cache().get(persisted_key)
    if not (isinstance(value, str) and len(value) == 64):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        value = digest.hexdigest()
        if cache:
            _write_hash_cache(persisted_key, value)
    if cache:
        with _sha_lock:
            _sha_cache[key] = value
    return value
