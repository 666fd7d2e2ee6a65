"""What the scoring pipeline reads: matching inputs, archives member by member, file names to times.

Stage: scoring 1 (match) and 3 (decode): what the scoring job reads, used by both.

An input is a local path, a `gs://` path, a glob (`**` recurses), a folder, or a text file listing
any of those (`--input_list`). Everything is opened through Beam's `FileSystems`, so the same code
reads local disks and Cloud Storage. Matched files become `Source` elements:

- audio files (anything soundfile decodes) -> one `Source` each, keyed by the path;
- zip / tar / tar.gz archives -> one `Source` for the archive, read member by member when decoded;
  each audio member becomes a recording keyed `archive!member`. A zip or uncompressed tar archive
  (random access) is planned as parts of about 64 MB of members that different workers decode; a
  compressed tar is read in one sequential pass by one worker (it cannot be entered midway);
- AudioSet embedding TFRecords (`.tfrecord`, `.tfrecord.gz`, `.tfrecords`) -> one `Source`, each
  SequenceExample in it becomes a recording keyed `file!video_id:start_ms` (records.clip_key).

A folder (or `gs://bucket/prefix/`) is expanded recursively and keeps only files with a known audio,
archive or TFRecord extension; files named explicitly or by a glob are all kept, so a mis-named
file ends as an error row instead of disappearing.
"""

import contextlib
import dataclasses
import datetime
import io
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from gunshot_core.errors import describe

AUDIO_EXTENSIONS = frozenset(
    ".wav .wave .flac .ogg .oga .opus .mp3 .aif .aiff .aifc .au .snd .w64 .rf64 .caf .sd2 .voc .htk"
    " .nist .sph .paf .mat .pvf .xi .wve .mpc .sds .avr .svx .ircam .sf".split()
)
ZIP_EXTENSIONS = (".zip",)
TAR_EXTENSIONS = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
TFRECORD_EXTENSIONS = (".tfrecord", ".tfrecord.gz", ".tfrecords", ".tfrecords.gz")

KIND_AUDIO = "audio"
KIND_ARCHIVE = "archive"  # a whole archive; its members become KIND_MEMBER recordings
KIND_MEMBER = "archive_member"
KIND_TFRECORD = "tfrecord"

# Members are spooled to memory up to this size and to a local temporary file above it.
SPOOL_MAX_MEMORY_BYTES = 64 << 20
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclasses.dataclass(frozen=True, order=True)
class Source:
    """One matched input file.

    Attributes:
      path: the file as matched (local path or gs:// URI).
      kind: KIND_AUDIO, KIND_ARCHIVE or KIND_TFRECORD.
      size_bytes: file size reported by the file system (-1 when unknown).
    """

    path: str
    kind: str
    size_bytes: int = -1


@dataclasses.dataclass(frozen=True)
class MatchError:
    """A pattern that matched nothing or could not be listed."""

    pattern: str
    reason: str  # not_found | unreadable
    message: str


def _lower_name(path: str) -> str:
    return posixpath.basename(path.rstrip("/")).lower()


def classify(path: str) -> str:
    """The Source kind of a file name: archive, tfrecord, or audio (the default for anything else)."""
    name = _lower_name(path)
    if name.endswith(ZIP_EXTENSIONS) or name.endswith(TAR_EXTENSIONS):
        return KIND_ARCHIVE
    if name.endswith(TFRECORD_EXTENSIONS):
        return KIND_TFRECORD
    return KIND_AUDIO


def is_known_input(path: str) -> bool:
    """True for audio, archive and TFRecord file names (used to filter folder listings)."""
    name = _lower_name(path)
    if name.startswith("."):
        return False
    if classify(name) != KIND_AUDIO:
        return True
    return os.path.splitext(name)[1] in AUDIO_EXTENSIONS


def is_audio_name(path: str) -> bool:
    """True for file names with an audio extension (used to filter archive members)."""
    name = _lower_name(path)
    return not name.startswith(".") and os.path.splitext(name)[1] in AUDIO_EXTENSIONS


def read_input_list(path: str) -> list[str]:
    """Patterns from a text file (local or gs://): one per line; blank lines and `#` comments skipped."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        text = f.read().decode("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _is_directory(pattern: str) -> bool:
    if pattern.endswith("/"):
        return True
    return "://" not in pattern and os.path.isdir(pattern)


def expand_pattern(pattern: str) -> Iterator[Source | MatchError]:
    """Matches one input pattern: yields a Source per file, or one MatchError when nothing matches.

    A folder is listed recursively and filtered to known extensions; a plain path that matches no file
    is retried as a folder (Cloud Storage has no real folders).
    """
    try:
        found = []
        as_folder = _is_directory(pattern)
        if not as_folder:
            found = [m for m in FileSystems.match([pattern])[0].metadata_list if not _is_directory(m.path)]
            as_folder = not found and not _GLOB_CHARS.search(pattern)
        if as_folder:
            folder = pattern.rstrip("/") + "/**"
            found = [m for m in FileSystems.match([folder])[0].metadata_list if is_known_input(m.path)]
    except Exception as e:  # noqa: BLE001 - any listing failure becomes an error row
        yield MatchError(pattern, "unreadable", f"cannot list {pattern!r}: {describe(e)}")
        return
    if not found:
        yield MatchError(pattern, "not_found", f"no input files match {pattern!r}")
        return
    for m in sorted(found, key=lambda m: m.path):
        yield Source(m.path, classify(m.path), int(m.size_in_bytes))


def open_file(path: str):
    """A binary, seekable file object for a local or gs:// path (never decompressed on the fly)."""
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


@contextlib.contextmanager
def readable(path: str):
    """Yields what soundfile should open: the path itself when local, else a seekable file object."""
    if "://" not in path:
        yield path
        return
    with open_file(path) as f:
        yield f


def _spool(fileobj, size: int):
    """Copies a (possibly non-seekable) member stream into a seekable in-memory or temporary file."""
    if 0 <= size <= SPOOL_MAX_MEMORY_BYTES:
        return io.BytesIO(fileobj.read())
    spooled = tempfile.TemporaryFile()
    shutil.copyfileobj(fileobj, spooled, 1 << 20)
    spooled.seek(0)
    return spooled


@dataclasses.dataclass
class Member:
    """One audio member of an archive, with a seekable file object positioned at 0."""

    name: str
    fileobj: object  # binary, seekable


def _is_skipped_zip_entry(info: zipfile.ZipInfo) -> bool:
    return not is_audio_name(info.filename) or "__MACOSX/" in info.filename


PLAIN_TAR_EXTENSIONS = (".tar",)


def splits_into_parts(path: str) -> bool:
    """Whether an archive allows random access to its members: zip, and tar without compression
    (a compressed tar can only be read from its start)."""
    return _lower_name(path).endswith(ZIP_EXTENSIONS + PLAIN_TAR_EXTENSIONS)


@dataclasses.dataclass(frozen=True)
class ArchiveEntry:
    """An audio member of a random-access archive: its name, stored bytes and, in a plain tar,
    where its data starts (None in a zip, whose directory locates members by name)."""

    name: str
    nbytes: int
    offset: int | None = None


def list_archive_members(path: str) -> tuple[list[ArchiveEntry], list[str]]:
    """The audio members of a zip or plain tar archive, in archive order, and the names of the other
    (skipped) members. Reads only the zip's central directory, or the tar's headers.

    Raises:
      zipfile.BadZipFile, tarfile.TarError, OSError: the archive itself is unreadable.
      ValueError: a tar holding sparse members (their data is not one stretch of the file).
    """
    audio_members, skipped = [], []
    with open_file(path) as raw:
        if _lower_name(path).endswith(ZIP_EXTENSIONS):
            with zipfile.ZipFile(raw) as archive:
                for info in archive.infolist():
                    if info.is_dir():
                        continue
                    if _is_skipped_zip_entry(info):
                        skipped.append(info.filename)
                    else:
                        audio_members.append(ArchiveEntry(info.filename, int(info.compress_size)))
        else:
            with tarfile.open(fileobj=raw, mode="r:") as archive:
                for info in archive:
                    if not info.isfile():
                        continue
                    if info.issparse():
                        raise ValueError(f"{path}: sparse member {info.name!r}")
                    if is_audio_name(info.name):
                        audio_members.append(ArchiveEntry(info.name, int(info.size), int(info.offset_data)))
                    else:
                        skipped.append(info.name)
    return audio_members, skipped


@dataclasses.dataclass(frozen=True)
class ArchivePart:
    """Some audio members of a random-access archive, decoded together by one worker."""

    index: int
    count: int
    members: tuple[ArchiveEntry, ...]


def plan_archive_parts(members: list[ArchiveEntry], part_bytes: int) -> list[ArchivePart]:
    """Groups members, in order, into parts of about `part_bytes` stored bytes each (at least one
    member per part), so the workers of a job can share one large archive."""
    groups: list[list[ArchiveEntry]] = []
    size = 0
    for entry in members:
        if not groups or size >= part_bytes:
            groups.append([])
            size = 0
        groups[-1].append(entry)
        size += entry.nbytes
    return [ArchivePart(i, len(groups), tuple(entries)) for i, entries in enumerate(groups)]


def iter_part_members(path: str, part: ArchivePart) -> Iterator[Member | tuple[str, Exception]]:
    """The members of an archive part, spooled one at a time, in order; a member that cannot be read
    yields (name, exception) instead.

    Raises:
      zipfile.BadZipFile, OSError: the archive itself is unreadable.
    """
    with open_file(path) as raw:
        archive = zipfile.ZipFile(raw) if _lower_name(path).endswith(ZIP_EXTENSIONS) else None
        try:
            for entry in part.members:
                try:
                    if archive is not None:
                        info = archive.getinfo(entry.name)
                        with archive.open(info) as f:
                            spooled = _spool(f, info.file_size)
                    else:
                        raw.seek(entry.offset)
                        spooled = _spool(_Limited(raw, entry.nbytes), entry.nbytes)
                        if _size_of(spooled) != entry.nbytes:
                            raise EOFError(
                                f"member data ends after {_size_of(spooled)} of {entry.nbytes} bytes"
                            )
                except (KeyError, zipfile.BadZipFile, OSError, EOFError, RuntimeError) as e:
                    yield entry.name, e
                    continue
                with spooled:
                    yield Member(entry.name, spooled)
        finally:
            if archive is not None:
                archive.close()


class _Limited(io.RawIOBase):
    """The next `remaining` bytes of a file object, as a readable stream."""

    def __init__(self, fileobj, remaining: int):
        self._f = fileobj
        self._remaining = remaining

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self._remaining)
        if n <= 0:
            return 0
        data = self._f.read(n)
        buffer[: len(data)] = data
        self._remaining -= len(data)
        return len(data)


def _size_of(fileobj) -> int:
    position = fileobj.tell()
    size = fileobj.seek(0, io.SEEK_END)
    fileobj.seek(position)
    return size


def iter_archive_members(path: str, skipped: list[str] | None = None) -> Iterator[Member]:
    """Yields the audio members of a zip or tar(.gz/.bz2/.xz) archive, in archive order, one at a time.

    Each member is spooled (memory up to SPOOL_MAX_MEMORY_BYTES, else a temporary file) so soundfile
    can seek in it, and released before the next one is read. Non-audio members are not yielded;
    their names are appended to `skipped`.

    Raises:
      zipfile.BadZipFile, tarfile.TarError, OSError: the archive itself is unreadable.
    """
    name = _lower_name(path)
    with open_file(path) as raw:
        if name.endswith(ZIP_EXTENSIONS):
            with zipfile.ZipFile(raw) as archive:
                for info in archive.infolist():
                    if info.is_dir():
                        continue
                    if _is_skipped_zip_entry(info):
                        if skipped is not None:
                            skipped.append(info.filename)
                        continue
                    with archive.open(info) as f:
                        spooled = _spool(f, info.file_size)
                    with spooled:
                        yield Member(info.filename, spooled)
        else:
            # Stream mode: one sequential pass, so tar.gz is decompressed once.
            with tarfile.open(fileobj=raw, mode="r|*") as archive:
                for info in archive:
                    if not info.isfile():
                        continue
                    if not is_audio_name(info.name):
                        if skipped is not None:
                            skipped.append(info.name)
                        continue
                    f = archive.extractfile(info)
                    spooled = _spool(f, info.size)
                    with spooled:
                        yield Member(info.name, spooled)


def member_source_id(archive_path: str, member: str) -> str:
    """The `source` key of an archive member: `archive!member`."""
    return f"{archive_path}!{member}"


# ---- File names to absolute times ---------------------------------------------------------------


def compile_timestamp_pattern(pattern: str) -> re.Pattern:
    """A regex that finds a strptime `pattern` anywhere in a file name.

    Raises:
      ValueError: the pattern has no strptime directive or is not a valid strptime format.
    """
    if "%" not in pattern:
        raise ValueError(f"--timestamp_pattern {pattern!r} has no strptime directive such as %Y")
    import _strptime  # the stdlib's own format -> regex translation, so both agree exactly

    try:
        return _strptime._TimeRE_cache.compile(pattern)
    except (KeyError, ValueError, re.error) as e:
        raise ValueError(f"invalid --timestamp_pattern {pattern!r}: {e}") from e


def parse_timestamp(name: str, pattern: str) -> datetime.datetime | None:
    """The UTC start time encoded in a file name, or None when the name does not contain the pattern.

    The pattern (strptime syntax, e.g. `%Y%m%d_%H%M%S`) may sit anywhere in the base name, as in
    `SITE7_20230114_031500.wav`. Names without a `%z` offset are taken as UTC.
    """
    base = posixpath.basename(name.replace("\\", "/"))
    match = compile_timestamp_pattern(pattern).search(base)
    if not match:
        return None
    try:
        when = datetime.datetime.strptime(match.group(0), pattern)
    except ValueError:
        return None
    if when.tzinfo is None:
        return when.replace(tzinfo=datetime.UTC)
    return when.astimezone(datetime.UTC)


def expand_patterns(patterns: Iterable[str]) -> Iterator[Source | MatchError]:
    """expand_pattern over several patterns, each file once (first match wins)."""
    seen = set()
    for pattern in patterns:
        for item in expand_pattern(pattern):
            if isinstance(item, Source):
                if item.path in seen:
                    continue
                seen.add(item.path)
            yield item
