"""Model files: download and cache the VGGish checkpoint and PCA parameters, resolve paths, hash files.

    gunshot models download [--dir DIR] [--base-url URL] [--force]
    gunshot models list [--dir DIR] [--verify]
    gunshot models info [NAME|PATH] [--dir DIR]
    gunshot models info vggish|birdnet          an embedding model: frames, license, files and hashes

Where files live (first match wins):
  checkpoint: explicit argument (--checkpoint), $GUNSHOT_VGGISH_CHECKPOINT, <models dir>/vggish_model.ckpt
  PCA params: explicit argument (--pca),        $GUNSHOT_PCA_PARAMS,        <models dir>/vggish_pca_params.npz
  head:       explicit argument (--head),       $GUNSHOT_HEAD,              the bundled original LSTM head
The models dir is --dir, else $GUNSHOT_MODELS_DIR, else $XDG_CACHE_HOME/gunshot-spotter/models
(~/.cache/gunshot-spotter/models). Downloads come from $GUNSHOT_MODELS_BASE_URL or --base-url
(a mirror holding the same file names), default https://storage.googleapis.com/audioset.

Integrity: the AudioSet storage publishes no checksums, so a download is checked against the size the
server announces (Content-Length / Content-Range) and its sha256 is recorded in <models dir>/manifest.json
on first download; later downloads and `list --verify` must match that recorded hash. A file is
written to `<name>.part` (resumed with HTTP Range after an interruption) and renamed into place only
after the checks pass, so a half-written file is never used.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import errno
import json
import logging
import os
import pathlib
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException

from gunshot_core import arguments
from gunshot_core.errors import DownloadError, ModelFileError
from gunshot_core.hashes import _CHUNK, _is_url, file_sha256, remember_sha256

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://storage.googleapis.com/audioset"
ENV_MODELS_DIR = "GUNSHOT_MODELS_DIR"
ENV_BASE_URL = "GUNSHOT_MODELS_BASE_URL"
ENV_CHECKPOINT = "GUNSHOT_VGGISH_CHECKPOINT"
ENV_PCA = "GUNSHOT_PCA_PARAMS"
ENV_HEAD = "GUNSHOT_HEAD"
MANIFEST_NAME = "manifest.json"

CHECKPOINT_NAME = "vggish_model.ckpt"
PCA_NAME = "vggish_pca_params.npz"

#: Retry policy of downloads: attempts after the first, and the first back-off delay (doubled each time).
RETRIES = 5
RETRY_BACKOFF_SECONDS = 1.0
TIMEOUT_SECONDS = 60.0


@dataclasses.dataclass(frozen=True)
class KnownFile:
    """A model file this project can download.

    Attributes:
      name: file name (in the models dir and under the base URL).
      kind: "vggish_checkpoint" or "pca_params".
      description: one line for `gunshot models list`.
      size: expected size in bytes, or None when no authoritative size is known.
      sha256: expected sha256, or None when no authoritative hash is published (then the hash is
        recorded in the manifest on first download and enforced afterwards).
    """

    name: str
    kind: str
    description: str
    size: int | None = None
    sha256: str | None = None


# No official sizes or hashes are published for these files (see docs/models.md).
KNOWN_FILES: dict[str, KnownFile] = {
    CHECKPOINT_NAME: KnownFile(
        CHECKPOINT_NAME, "vggish_checkpoint", "VGGish model checkpoint (TF V1, ~288 MB)"
    ),
    PCA_NAME: KnownFile(PCA_NAME, "pca_params", "VGGish PCA/whitening parameters (npz)"),
}


@dataclasses.dataclass(frozen=True)
class ModelPaths:
    """Resolved local paths (or URLs such as gs://...) of the three model files."""

    checkpoint: str
    pca: str
    head: str


# --- locations --------------------------------------------------------------------------------------------


def default_models_dir() -> pathlib.Path:
    """$GUNSHOT_MODELS_DIR, else $XDG_CACHE_HOME/gunshot-spotter/models, else ~/.cache/gunshot-spotter/models."""
    if os.environ.get(ENV_MODELS_DIR):
        return pathlib.Path(os.environ[ENV_MODELS_DIR]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(cache) / "gunshot-spotter" / "models"


def models_dir(directory=None) -> pathlib.Path:
    return pathlib.Path(directory).expanduser() if directory else default_models_dir()


def base_url(url: str | None = None) -> str:
    return (url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL).rstrip("/")


def _check_exists(path: str, source: str) -> str:
    if not _is_url(path) and not os.path.exists(path):
        raise ModelFileError(f"{source} points to {path!r}, which does not exist")
    return str(path)


def resolve_model_paths(checkpoint=None, pca=None, head=None, *, directory=None) -> ModelPaths:
    """Finds the VGGish checkpoint, the PCA parameters and the head.

    Explicit arguments win, then $GUNSHOT_VGGISH_CHECKPOINT / $GUNSHOT_PCA_PARAMS / $GUNSHOT_HEAD, then
    the models dir (`directory`, default `default_models_dir()`); the head defaults to the bundled one.
    URLs (gs://...) are returned without an existence check.

    Raises:
      ModelFileError: a file is missing; for the cached files the message says to run
        `gunshot models download` (or to pass --checkpoint / --pca).
    """
    from gunshot_core.heads import DEFAULT_HEAD_PATH

    root = models_dir(directory)
    found = {}
    for key, value, env, name, flag in (
        ("checkpoint", checkpoint, ENV_CHECKPOINT, CHECKPOINT_NAME, "--checkpoint"),
        ("pca", pca, ENV_PCA, PCA_NAME, "--pca"),
    ):
        if value:
            found[key] = _check_exists(os.fspath(value), flag)
        elif os.environ.get(env):
            found[key] = _check_exists(os.environ[env], f"${env}")
        else:
            path = root / name
            if not path.is_file():
                raise ModelFileError(
                    f"{name} not found in {root}: run `gunshot models download` to fetch the VGGish model "
                    f"files (or pass {flag} PATH, or set ${env})"
                )
            found[key] = str(path)
    if head:
        found["head"] = _check_exists(os.fspath(head), "--head")
    elif os.environ.get(ENV_HEAD):
        found["head"] = _check_exists(os.environ[ENV_HEAD], f"${ENV_HEAD}")
    else:
        found["head"] = DEFAULT_HEAD_PATH
    return ModelPaths(**found)


def read_manifest(directory) -> dict:
    """{file name: {"size", "sha256", "url", "downloaded_utc"}} recorded by downloads ({} if none)."""
    path = pathlib.Path(directory) / MANIFEST_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as e:
        raise ModelFileError(f"cannot read the models manifest {str(path)!r}: {e}") from e


def _write_manifest(directory: pathlib.Path, manifest: dict) -> None:
    tmp = directory / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, directory / MANIFEST_NAME)


# --- downloading ------------------------------------------------------------------------------------------


class _Progress:
    """A plain-text progress line on stderr, redrawn at most every 0.5 s."""

    def __init__(self, label: str, total: int | None, enabled: bool):
        self.label, self.total, self.enabled = label, total, enabled
        self.start = time.monotonic()
        self.last = 0.0
        self.start_bytes = None

    def update(self, done: int, final: bool = False) -> None:
        if not self.enabled:
            return
        if self.start_bytes is None:
            self.start_bytes = done
        now = time.monotonic()
        if not final and now - self.last < 0.5:
            return
        self.last = now
        rate = (done - self.start_bytes) / max(now - self.start, 1e-6) / 1e6
        if self.total:
            text = f"{self.label}: {100 * done / self.total:5.1f}% {done / 1e6:.1f}/{self.total / 1e6:.1f} MB"
        else:
            text = f"{self.label}: {done / 1e6:.1f} MB"
        sys.stderr.write(f"\r{text} {rate:.1f} MB/s" + ("\n" if final else ""))
        sys.stderr.flush()


class _Retry(Exception):
    """A transient failure worth another attempt."""


def _fetch_once(url: str, part: pathlib.Path, expected_size: int | None, progress: _Progress) -> int | None:
    """One attempt: appends to `part` (resuming with Range if it has bytes). Returns the total size if known."""
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset > expected_size:
        part.unlink()
        offset = 0
    headers = {"User-Agent": "gunshot-spotter"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the .part already holds everything, or is longer than the file
            total = _total_from_content_range(e.headers.get("Content-Range"))
            if total is not None and total == offset:
                return total
            part.unlink()
            raise _Retry(f"HTTP 416 for a resume at byte {offset}; restarting from 0") from e
        if e.code in (408, 425, 429) or e.code >= 500:
            raise _Retry(f"HTTP {e.code} {e.reason}") from e
        raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, TimeoutError, ConnectionError, HTTPException, OSError) as e:
        reason = getattr(e, "reason", e)
        if _is_offline(reason):
            raise DownloadError(
                f"cannot reach {urllib.parse.urlsplit(url).netloc or url} ({reason}): no network? "
                f"Connect and run the download again, fetch from a mirror you can reach (--base-url URL or "
                f"${ENV_BASE_URL}), or copy the model files into {part.parent} "
                f"(or set ${ENV_CHECKPOINT} and ${ENV_PCA} to copies)"
            ) from e
        raise _Retry(f"{type(e).__name__}: {reason}") from e
    with response:
        if offset and response.status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise _Retry(f"server resumed at byte {start}, not {offset}; restarting")
            mode = "ab"
        else:  # 200: the server ignored the Range header (or there was none): start over
            offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if expected_size is not None and total is not None and total != expected_size:
            raise DownloadError(f"{url}: server announces {total} bytes, expected {expected_size}")
        progress.total = total or expected_size
        done = offset
        try:
            with open(part, mode) as out:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    progress.update(done)
        except (TimeoutError, ConnectionError, HTTPException, OSError) as e:
            raise _Retry(f"connection lost at byte {done}: {type(e).__name__}: {e}") from e
    if total is not None and done < total:
        raise _Retry(f"connection closed at byte {done} of {total}")
    return total


def _is_offline(reason) -> bool:
    """True for failures no retry fixes soon: the host name cannot be resolved, or no route to any
    network (a machine without network, a mistyped mirror host)."""
    if isinstance(reason, socket.gaierror):
        return True
    return isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH)


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """'bytes 100-199/200' -> (100, 200)."""
    try:
        unit, rest = value.split(" ", 1)
        span, total = rest.split("/", 1)
        return int(span.split("-", 1)[0]), (None if total == "*" else int(total))
    except (AttributeError, ValueError):
        return None, None


def _total_from_content_range(value: str | None) -> int | None:
    """'bytes */200' -> 200."""
    try:
        return int(value.rsplit("/", 1)[1])
    except (AttributeError, IndexError, ValueError):
        return None


def download_file(
    url: str,
    dest,
    *,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    retries: int | None = None,
    progress: bool = True,
) -> str:
    """Downloads url to dest through dest.part with resume, retries and verification.

    Args:
      url: source URL. dest: final path (replaced atomically only after the checks pass).
      expected_size: bytes, or None to trust the server's announced size.
      expected_sha256: hex digest, or None (no hash check).
      retries: attempts after the first (default RETRIES); back-off RETRY_BACKOFF_SECONDS, doubled.
      progress: draw a progress line on stderr.
    Returns:
      the sha256 of the downloaded file.
    Raises:
      DownloadError: permanent HTTP error, retries exhausted, or size/sha256 mismatch (the .part file
        is deleted on a mismatch; it is kept for a later resume when retries run out).
    """
    dest = pathlib.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    retries = RETRIES if retries is None else retries
    bar = _Progress(dest.name, expected_size, progress)
    total = None
    for attempt in range(retries + 1):
        try:
            total = _fetch_once(url, part, expected_size, bar)
            break
        except _Retry as e:
            if attempt == retries:
                kept = part.is_file() and part.stat().st_size > 0
                resume = (
                    f"{part.stat().st_size:,} bytes kept in {part}; run the download again to resume"
                    if kept
                    else "run the download again when the connection works"
                )
                raise DownloadError(
                    f"download of {url} failed after {retries + 1} attempts: {e} ({resume})"
                ) from e
            delay = RETRY_BACKOFF_SECONDS * 2**attempt
            if progress:
                sys.stderr.write(f"\n{dest.name}: {e}; retrying in {delay:.1f} s\n")
            time.sleep(delay)
    size = part.stat().st_size
    bar.update(size, final=True)
    want = expected_size if expected_size is not None else total
    if want is not None and size != want:
        part.unlink()
        raise DownloadError(f"{url}: downloaded {size} bytes, expected {want}; the partial file was removed")
    sha = file_sha256(part, cache=False)
    if expected_sha256 and sha != expected_sha256.lower():
        part.unlink()
        raise DownloadError(
            f"{url}: sha256 {sha} does not match the expected {expected_sha256}; the download was removed"
        )
    os.replace(part, dest)
    remember_sha256(dest, sha)  # jobs and `gunshot score` then never hash the file again
    return sha


def download(
    names=None, *, directory=None, url: str | None = None, force: bool = False, progress=True
) -> dict:
    """Downloads the known model files into the models dir; skips files already present unless force.

    Returns:
      {name: path} of every requested file.
    Raises:
      DownloadError, including when a file's sha256 differs from the one recorded in the manifest.
    """
    root = models_dir(directory)
    root.mkdir(parents=True, exist_ok=True)
    source = base_url(url)
    out = {}
    for name in names or list(KNOWN_FILES):
        if name not in KNOWN_FILES:
            raise DownloadError(f"unknown model file {name!r}; known: {', '.join(KNOWN_FILES)}")
        known = KNOWN_FILES[name]
        dest = root / name
        manifest = read_manifest(root)
        recorded = manifest.get(name, {})
        if dest.is_file() and not force:
            if progress:
                sys.stderr.write(f"{name}: already present in {root} (use --force to download again)\n")
            out[name] = str(dest)
            continue
        file_url = f"{source}/{name}"
        sha = download_file(
            file_url,
            dest,
            expected_size=known.size,
            expected_sha256=known.sha256 or recorded.get("sha256"),
            progress=progress,
        )
        manifest = read_manifest(root)
        manifest[name] = {
            "size": dest.stat().st_size,
            "sha256": sha,
            "url": file_url,
            "downloaded_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        _write_manifest(root, manifest)
        out[name] = str(dest)
    return out


# --- inspection -------------------------------------------------------------------------------------------


#: The environment variable that overrides each known file of the models dir.
ENV_FOR = {CHECKPOINT_NAME: ENV_CHECKPOINT, PCA_NAME: ENV_PCA}


def file_status(directory=None, *, verify: bool = False) -> list[dict]:
    """One dict per known file: name, path, source, status (ok | missing | partial | size_mismatch |
    sha256_mismatch | unverified), size, and the recorded sha256.

    A file named by its environment variable ($GUNSHOT_VGGISH_CHECKPOINT, $GUNSHOT_PCA_PARAMS) is the
    one the commands use, so it is reported instead of the models dir's copy (source `$VAR`): ok when
    it exists (any size: it may be another checkpoint on purpose), else missing.
    """
    root = models_dir(directory)
    manifest = read_manifest(root) if root.is_dir() else {}
    rows = []
    for name, known in KNOWN_FILES.items():
        path = root / name
        record = manifest.get(name, {})
        row = {
            "name": name,
            "kind": known.kind,
            "path": str(path),
            "source": "models dir",
            "size": None,
            "sha256": record.get("sha256"),
        }
        override = os.environ.get(ENV_FOR.get(name, ""))
        if override:
            row.update(path=override, source=f"${ENV_FOR[name]}", sha256=None)
            if _is_url(override) or os.path.isfile(override):
                row["status"] = "ok"
                row["size"] = None if _is_url(override) else os.path.getsize(override)
            else:
                row["status"] = "missing"
            rows.append(row)
            continue
        if not path.is_file():
            row["status"] = "partial" if path.with_name(name + ".part").exists() else "missing"
        else:
            row["size"] = path.stat().st_size
            want_size = known.size or record.get("size")
            want_sha = known.sha256 or record.get("sha256")
            if want_size is not None and row["size"] != want_size:
                row["status"] = "size_mismatch"
            elif verify and want_sha and file_sha256(path, cache=False) != want_sha:
                row["status"] = "sha256_mismatch"
            elif not want_size and not want_sha:
                row["status"] = "unverified"  # placed by hand: no manifest record
            else:
                row["status"] = "ok"
        rows.append(row)
    return rows


def describe_file(path) -> dict:
    """Kind, size and sha256 of a model file; for a head also id, frames, threshold and layers; for an
    embedding model's name ("vggish", "birdnet") its description, license and files."""
    from gunshot_core import embedding_models, heads

    if str(path) in embedding_models.NAMES:
        return embedding_models.describe(str(path))

    p = pathlib.Path(path)
    if not p.exists():
        raise ModelFileError(f"no such file or directory: {str(p)!r}")
    if p.is_dir() or p.suffix in (".h5", ".hdf5", ".keras"):
        info = heads.load_head(p).describe()
        info["size"] = (p / heads.MODEL_FILENAME).stat().st_size if p.is_dir() else p.stat().st_size
        return info
    info = {"path": str(p), "size": p.stat().st_size, "sha256": file_sha256(p)}
    if p.suffix == ".npz":
        import numpy as np

        try:
            with np.load(p, allow_pickle=False) as data:
                info["arrays"] = {k: f"{data[k].dtype} {list(data[k].shape)}" for k in data.files}
        except (OSError, ValueError) as e:
            raise ModelFileError(f"{p}: not a readable .npz file: {e}") from e
        info["kind"] = "pca_params" if {"pca_eigen_vectors", "pca_means"} <= set(info["arrays"]) else "npz"
    elif p.suffix == ".ckpt" or p.name == CHECKPOINT_NAME:
        info["kind"] = "vggish_checkpoint"
    else:
        info["kind"] = "unknown"
    return info


# --- CLI --------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = arguments.ArgumentParser(
        "models",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    dir_help = f"models directory (default: ${ENV_MODELS_DIR} or {default_models_dir()})"
    p = sub.add_parser("download", help="download the VGGish checkpoint and PCA parameters")
    p.add_argument("--dir", help=dir_help)
    p.add_argument(
        "--base-url", help=f"mirror URL holding the files (default: ${ENV_BASE_URL} or {DEFAULT_BASE_URL})"
    )
    p.add_argument("--force", action="store_true", help="download again even if the files are present")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument(
        "names", nargs="*", metavar="NAME", help=f"files to fetch (default: all of {', '.join(KNOWN_FILES)})"
    )
    p = sub.add_parser("list", help="show which model files are installed, where, and whether they check out")
    p.add_argument("--dir", help=dir_help)
    p.add_argument("--verify", action="store_true", help="also recompute sha256 against the manifest (slow)")
    p = sub.add_parser(
        "info", help="size, sha256 and kind of a model file; layers/frames/threshold of a head"
    )
    p.add_argument(
        "target",
        nargs="?",
        metavar="NAME|PATH",
        help="a known file name, 'head', an embedding model ('vggish', 'birdnet': description, license, "
        "files), or a path (default: all)",
    )
    p.add_argument("--dir", help=dir_help)
    p.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _print_info(info: dict) -> None:
    for key, value in info.items():
        if key == "layers":
            print("layers:")
            for line in value:
                print(f"  {line}")
        elif key == "files" and isinstance(value, dict):
            print("files:")
            for role, desc in value.items():
                print(f"  {role}: {desc}")
        elif key == "arrays":
            print("arrays:")
            for name, desc in value.items():
                print(f"  {name}: {desc}")
        else:
            print(f"{key}: {value}")


def main(argv=None) -> int:
    """Entry point of `gunshot models`; returns the exit code (0 ok, 1 failure, 2 usage)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        if args.command == "download":
            paths = download(
                args.names or None,
                directory=args.dir,
                url=args.base_url,
                force=args.force,
                progress=not args.quiet,
            )
            for name, path in paths.items():
                print(f"{name}: {path}")
            return 0
        if args.command == "list":
            root = models_dir(args.dir)
            print(f"models dir: {root}")
            bad, bad_override = 0, []
            for row in file_status(args.dir, verify=args.verify):
                size = f"{row['size']:,} B" if row["size"] is not None else "-"
                name = row["name"] if row["source"] == "models dir" else f"{row['name']} ({row['source']})"
                print(f"  {row['status']:<15} {name:<24} {size:>16}  {row['path']}")
                if row["status"] not in ("ok", "unverified"):
                    if row["source"] == "models dir":
                        bad += 1
                    else:
                        bad_override.append(f"{row['source']} points to {row['path']}, which does not exist")
            from gunshot_core.heads import DEFAULT_HEAD_PATH

            head = os.environ.get(ENV_HEAD) or DEFAULT_HEAD_PATH
            source = f"${ENV_HEAD}" if os.environ.get(ENV_HEAD) else "bundled default"
            status = "ok" if os.path.exists(head) else "missing"
            print(f"  {status:<15} {'head (' + source + ')':<24} {'':>16}  {head}")
            for text in bad_override:
                print(text, file=sys.stderr)
            if bad:
                print("run `gunshot models download` to fetch missing files", file=sys.stderr)
            return 1 if bad or bad_override else 0
        if args.command == "info":
            from gunshot_core.heads import DEFAULT_HEAD_PATH

            root = models_dir(args.dir)
            env_for = ENV_FOR

            def installed(name):  # the file `resolve_model_paths` would use: $ENV override, else the dir
                return os.environ.get(env_for.get(name, "")) or str(root / name)

            if args.target is None:
                targets = [installed(n) for n in KNOWN_FILES if os.path.isfile(installed(n))]
                targets.append(os.environ.get(ENV_HEAD) or DEFAULT_HEAD_PATH)
            elif args.target in KNOWN_FILES:
                targets = [installed(args.target)]
            elif args.target == "head":
                targets = [os.environ.get(ENV_HEAD) or DEFAULT_HEAD_PATH]
            else:
                targets = [args.target]
            infos = [describe_file(t) for t in targets]
            if args.json:
                print(json.dumps(infos if len(infos) > 1 else infos[0], indent=2))
            else:
                for i, info in enumerate(infos):
                    if i:
                        print()
                    _print_info(info)
            return 0
    except (DownloadError, ModelFileError) as e:
        return arguments.fail("models", e)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
