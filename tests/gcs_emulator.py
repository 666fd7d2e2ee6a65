"""A local Cloud Storage emulator for tests of `gs://` paths (gcp-storage-emulator, in process).

Use the pytest fixture:

    from tests.gcs_emulator import gcs_emulator  # noqa: F401  (makes the fixture available)

    def test_reads_gs(gcs_emulator):
        bucket = gcs_emulator.create_bucket("audioset")        # -> "gs://audioset"
        gcs_emulator.upload(local_path, "gs://audioset/eval/00.tfrecord")
        ... run a pipeline on "gs://audioset/eval/*" ...

The fixture starts the emulator on 127.0.0.1 at a free port, sets STORAGE_EMULATOR_HOST for this process
(google-cloud-storage, and so Beam's GCS filesystem, then talks to it), makes Beam connect without
credentials (so nothing looks for Google credentials or a metadata server), and undoes all of it
afterwards. Pipelines must run in this process (the default DirectRunner / FnApiRunner in_memory or
multi_threading modes), since the credential switch is per process.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GcsEmulator:
    """Handle of a running emulator: its endpoint plus helpers to create buckets and move files."""

    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port
        self.endpoint = f"http://{host}:{port}"

    def client(self):
        """An anonymous google.cloud.storage.Client bound to the emulator."""
        from google.cloud import storage

        return storage.Client.create_anonymous_client()

    def create_bucket(self, name: str) -> str:
        """Creates a bucket (if missing) and returns `gs://name`."""
        client = self.client()
        try:
            client.create_bucket(name)
        except Exception as e:  # already exists
            if "409" not in str(e) and "already" not in str(e).lower():
                raise
        return f"gs://{name}"

    @staticmethod
    def _split(uri: str) -> tuple[str, str]:
        if not uri.startswith("gs://"):
            raise ValueError(f"not a gs:// URI: {uri!r}")
        bucket, _, blob = uri[5:].partition("/")
        return bucket, blob

    def upload(self, local_path, uri: str) -> str:
        """Copies a local file to `uri` (gs://bucket/path); returns the URI."""
        bucket, blob = self._split(uri)
        self.client().bucket(bucket).blob(blob).upload_from_filename(os.fspath(local_path))
        return uri

    def read(self, uri: str) -> bytes:
        """The bytes of an object."""
        bucket, blob = self._split(uri)
        return self.client().bucket(bucket).blob(blob).download_as_bytes()

    def list(self, prefix_uri: str) -> list[str]:
        """Sorted object URIs under `gs://bucket/prefix`."""
        bucket, prefix = self._split(prefix_uri)
        return sorted(f"gs://{bucket}/{b.name}" for b in self.client().list_blobs(bucket, prefix=prefix))


@contextlib.contextmanager
def running_emulator(buckets=()):
    """Context manager form of the fixture: yields a GcsEmulator, stops it on exit."""
    from apache_beam.internal.gcp import auth
    from gcp_storage_emulator.server import create_server

    host, port = "127.0.0.1", free_port()
    server = create_server(host, port, in_memory=True)
    server.start()
    saved_env = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT")}
    saved_auth = (auth._Credentials._credentials_init, auth._Credentials._credentials)
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://{host}:{port}"
    os.environ["GOOGLE_CLOUD_PROJECT"] = "test-project"
    # Beam looks for Google credentials once per process; "no credentials" makes its GCS client anonymous.
    auth._Credentials._credentials_init, auth._Credentials._credentials = True, None
    try:
        emulator = GcsEmulator(host, port)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((host, port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"storage emulator did not start on {host}:{port}") from None
                time.sleep(0.05)
        for bucket in buckets:
            emulator.create_bucket(bucket)
        yield emulator
    finally:
        server.stop()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        auth._Credentials._credentials_init, auth._Credentials._credentials = saved_auth


@pytest.fixture
def gcs_emulator():
    """A running local Cloud Storage emulator (GcsEmulator); see the module docstring."""
    with running_emulator() as emulator:
        yield emulator
