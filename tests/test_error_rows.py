"""Error rows are deterministic and say what failed: reruns over broken inputs give identical tables.

An error message must name the file (or the archive and member) and hold nothing that differs
between runs: no memory address of a file object, no temporary path of a worker, no process id.
"""

import io
import pathlib
import re
import shutil
import zipfile

import numpy as np
import pyarrow.parquet as pq
import pytest

from gunshot_core import audio
from gunshot_core.errors import AudioDecodeError, GunshotError, describe, sanitize
from pipelines import score
from pipelines.io import tables as io_tables
from tests import score_inputs
from tests.conftest import SEED_WAVS

TABLES = ("windows", "recordings", "events", "errors")
# What differs between runs: a memory address, a temporary file/folder of this process, a pid.
RUN_SPECIFIC = re.compile(r"0x[0-9a-fA-F]{6,}|/tmp/tmp|pymp-|pid[ =]\d+|<_io\.")


# ---- The helpers, without a pipeline -----------------------------------------------------------


def test_sanitize_removes_addresses_and_temporary_paths():
    import tempfile

    stream = io.BytesIO()
    temp = pathlib.Path(tempfile.gettempdir(), "tmpk2j4x_1", "part.wav")
    text = sanitize(f"Error opening {stream!r}: at {temp}, id 0x7fa207f549f0")
    assert text == "Error opening <_io.BytesIO object>: at <temporary file>, id 0x?"
    assert describe(ValueError("bad header")) == "ValueError: bad header"
    assert describe(GunshotError(f"x.wav: {stream!r}")) == "x.wav: <_io.BytesIO object>"


def test_decoder_names_a_file_object_by_its_display_name_never_its_repr():
    junk = np.random.default_rng(0).bytes(4000)
    with pytest.raises(AudioDecodeError) as named:
        audio.probe(audio.NamedFile(io.BytesIO(junk), "site.zip!a/b.wav"))
    assert str(named.value).startswith("site.zip!a/b.wav: cannot decode audio: ")
    assert "0x" not in str(named.value) and "BytesIO" not in str(named.value), str(named.value)
    with pytest.raises(AudioDecodeError) as unnamed:
        audio.probe(io.BytesIO(junk))
    assert str(unnamed.value).startswith("<file object>: cannot decode audio")
    assert "0x" not in str(unnamed.value), str(unnamed.value)
    # A NamedFile decodes like the object it wraps.
    good = (SEED_WAVS / "pistol_shot.wav").read_bytes()
    assert audio.probe(audio.NamedFile(io.BytesIO(good), "x")) == audio.probe(io.BytesIO(good))


# ---- Three runs of the scoring job over broken inputs ------------------------------------------


def _broken_inputs(root: pathlib.Path) -> dict:
    """A folder of broken files and archives (zip, plain tar, tar.gz) with broken members."""
    root.mkdir(parents=True, exist_ok=True)
    good = (SEED_WAVS / "pistol_shot.wav").read_bytes()
    junk = np.random.default_rng(7).bytes(30_000)
    files = root / "files"
    files.mkdir()
    (files / "good.wav").write_bytes(good)
    (files / "empty.wav").write_bytes(b"")
    (files / "truncated.wav").write_bytes(good[:2000])  # header promises 10 s, holds 0.02 s
    (files / "random_bytes.wav").write_bytes(junk)
    (files / "notes.flac").write_text("recorder log\n" * 50)  # wrong extension: text named as audio
    members = {
        "site/good.wav": good,
        "site/empty.wav": b"",
        "site/random_bytes.wav": junk,
        "site/truncated.wav": good[:2000],
        "site/notes.flac": b"recorder log\n" * 50,
    }
    archives = root / "archives"
    archives.mkdir()
    zipped = score_inputs.make_zip(archives / "batch.zip", members)
    plain_tar = score_inputs.make_tar_gz(archives / "batch.tar", members, mode="w")
    tar_gz = score_inputs.make_tar_gz(archives / "batch.tar.gz", members)
    # A zip member whose stored bytes are damaged (CRC error while reading it) ...
    damaged = score_inputs.make_zip(archives / "damaged.zip", {"d/good.wav": good, "d/bad_crc.wav": good})
    with zipfile.ZipFile(damaged) as z:
        info = z.getinfo("d/bad_crc.wav")
    data = bytearray(pathlib.Path(damaged).read_bytes())
    data[info.header_offset + 30 + len(info.filename) + 500] ^= 0xFF  # inside its stored data
    pathlib.Path(damaged).write_bytes(bytes(data))
    # ... and whole archives that cannot be read.
    (archives / "cut.zip").write_bytes(pathlib.Path(zipped).read_bytes()[:-300])
    (archives / "cut.tar.gz").write_bytes(pathlib.Path(tar_gz).read_bytes()[:-200])
    return {"patterns": [str(files), str(archives)], "zip": zipped, "tar": plain_tar, "tar_gz": tar_gz}


@pytest.fixture(scope="module")
def runs(random_vggish, tmp_path_factory):
    root = tmp_path_factory.mktemp("error_rows")
    inputs = _broken_inputs(root / "in")
    ckpt, pca = random_vggish
    argv = [f"--input={p}" for p in inputs["patterns"]] + [f"--checkpoint={ckpt}", f"--pca={pca}"]
    first, second, again = root / "first", root / "second", root / "again"
    score.run([*argv, f"--output={first}"])
    score.run([*argv, f"--output={second}"])
    shutil.copytree(first, again)
    score.run([*argv, f"--output={again}", "--skip_existing"])
    return inputs, first, second, again


def _table_files(output: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for name in TABLES for p in sorted(output.glob(f"{name}-*.parquet"))}


@pytest.mark.slow
def test_reruns_give_byte_identical_tables_errors_included(runs):
    _, first, second, again = runs
    tables = _table_files(first)
    assert sorted(tables) == sorted(_table_files(second)) == sorted(_table_files(again))
    for name, data in tables.items():
        assert _table_files(second)[name] == data, f"{name} differs between two runs"
        assert _table_files(again)[name] == data, f"{name} differs after --skip_existing"
        assert pq.read_table(first / name).equals(pq.read_table(again / name)), name


@pytest.mark.slow
def test_every_error_names_its_file_or_archive_member_and_nothing_run_specific(runs):
    inputs, first, _, _ = runs
    recordings = io_tables.read_table(str(first), "recordings").to_pylist()
    errors = io_tables.read_table(str(first), "errors").to_pylist()
    failed = [r for r in recordings if r["status"] == "error"]
    # 4 broken files; 4 broken members in each of zip, tar, tar.gz; the damaged member; 2 cut archives.
    assert len(failed) >= 4 + 3 * 4 + 1 + 2, [r["source"] for r in failed]
    for row in failed:
        message = row["error_message"]
        assert not RUN_SPECIFIC.search(message), message
        if row["member"] is None:
            assert row["file"] in message, message
        else:
            assert f"{row['file']}!{row['member']}" in message, message
    for row in errors:
        assert not RUN_SPECIFIC.search(row["message"]), row
        assert row["source"] in row["message"] or row["stage"] == "match", row
    by_source = {r["source"]: r for r in recordings}
    for archive in (inputs["zip"], inputs["tar"], inputs["tar_gz"]):
        for member in ("site/empty.wav", "site/random_bytes.wav", "site/truncated.wav", "site/notes.flac"):
            row = by_source[f"{archive}!{member}"]
            assert row["status"] == "error" and row["error_reason"], row
        assert by_source[f"{archive}!site/good.wav"]["status"] == "ok"
