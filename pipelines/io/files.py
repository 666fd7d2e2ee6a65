"""Whole files through Beam's FileSystems: compressed inputs in, JSON manifests out.

Stage: I/O (any stage). `open_maybe_compressed` reads local or `gs://` files, decompressing gzip
transparently; `write_json` writes run manifests (stats.json, run.json) as sorted, indented JSON, so
equal inputs give equal bytes.
"""

from __future__ import annotations

import json
from typing import Any

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


def open_maybe_compressed(path: str):
    """Opens a local or `gs://` file for reading, decompressing gzip transparently.

    Compression is taken from the file name (`.gz`, `.gzip`, ...) or, failing that, from the gzip magic
    bytes, so gzip-compressed shards named `*.tfrecord` are read too.

    Returns:
      a binary file object (the caller closes it).
    """
    compression = CompressionTypes.detect_compression_type(path)
    if compression == CompressionTypes.UNCOMPRESSED:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as probe:
            magic = probe.read(2)
        if magic == b"\x1f\x8b":
            compression = CompressionTypes.GZIP
    return FileSystems.open(path, compression_type=compression)


def write_json(path: str, obj: Any) -> None:
    """Writes `obj` as sorted, indented JSON to a local or gs:// path (stable bytes for equal input)."""
    data = (json.dumps(obj, sort_keys=True, indent=2, default=str) + "\n").encode("utf-8")
    with FileSystems.create(path, mime_type="application/json") as handle:
        handle.write(data)
