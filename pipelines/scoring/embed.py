"""Embedding: chunks of log-mel examples -> uint8 VGGish frames, with RunInference.

Stage: scoring 4 (embed). `VGGishModelHandler`: (key, chunk index, float32 [k, 96, 64]) -> (key,
(chunk index, uint8 [k, 128])), batched across recordings, one VGGish + PCA postprocessor per worker
(model files copied once per worker by `pipelines.scoring.model_cache`, see `localize`).
"""

import threading
from collections.abc import Iterable, Iterator

import numpy as np
from apache_beam.ml.inference.base import ModelHandler

from pipelines.scoring.config import DEFAULT_BATCH_SIZE
from pipelines.scoring.decode import COMPUTE_GATE
from pipelines.scoring.reporting import error_row


def localize(path: str, directory: str | None = None) -> str:
    """A local path for a model file or head directory: the path itself, or the worker's cached copy
    of a gs:// object (downloaded once per worker and reused by every process; see pipelines.scoring.model_cache).
    """
    from pipelines.scoring import model_cache

    return model_cache.local_copy(path, directory)


def import_tensorflow_ahead() -> None:
    """Starts importing TensorFlow in a background thread of this process (returns at once).

    For a job whose workers run in the launching process (`launch.runs_in_this_process`): the import
    then overlaps building the pipeline and starting the runner, and the worker's VGGish loader finds
    TensorFlow imported (or waits for the import in progress). ~0.35 s sooner to the first forward
    pass of a new `python -m pipelines.score` process. A failed import is reported by the loader.
    """
    from gunshot_core import startup

    def run():
        try:
            startup.import_tensorflow(freeze=True)
        except BaseException:  # noqa: BLE001 - the loader imports again and reports the error
            pass

    threading.Thread(target=run, name="tensorflow-import", daemon=True).start()


class ModelLoadError(BaseException):
    """VGGish could not be loaded on a worker.

    A BaseException on purpose: RunInference's dead-letter handling catches Exception, and a model
    that cannot load must fail the job loudly, not turn every recording into an error row.
    """


class _Embedder:
    """VGGish + the PCA postprocessor of one worker (what VGGishModelHandler.load_model returns).

    The model is built in a background thread started at construction, so decoding the first chunks
    overlaps with reading the checkpoint and building the network; the first call waits for it.
    """

    def __init__(self, checkpoint: str, pca: str, precision: str = "fp32"):
        self._checkpoint = checkpoint
        self._pca = pca
        self._precision = precision
        self._models = None
        self._error = None
        COMPUTE_GATE.load_started()  # before the thread starts: decoders see it at once
        self._loader = threading.Thread(target=self._load, name="vggish-load", daemon=True)
        self._loader.start()

    def _load(self):
        try:
            self._load_models()
        finally:
            COMPUTE_GATE.load_finished()

    def _load_models(self):
        try:
            from gunshot_core import startup

            if self._precision != "int8":  # int8 runs on OpenVINO: TensorFlow only to build it
                startup.import_tensorflow(freeze=True)  # ~250,000 long-lived objects; no eager Keras

            from gunshot_core.postprocess import Postprocessor
            from gunshot_core.vggish import VGGish

            # VGGish.embed runs fixed-shape blocks, so embeddings (and every table) are identical
            # however RunInference groups chunks into batches.
            network = VGGish.from_checkpoint(localize(self._checkpoint), precision=self._precision)
            network.trace()  # compiled here, in the loader thread, not in the first batch
            self._models = (network, Postprocessor.from_npz(localize(self._pca)))
        except BaseException as e:  # noqa: BLE001 - re-raised on first use
            self._error = e

    def __call__(self, examples: np.ndarray) -> np.ndarray:
        """float32 [n, 96, 64] -> uint8 [n, 128], independent of n and of the other examples."""
        self._loader.join()
        if self._error is not None:
            raise ModelLoadError(f"cannot load VGGish ({self._checkpoint}, {self._pca}): {self._error!r}")
        network, postprocessor = self._models
        with COMPUTE_GATE.busy():  # decoders of this process hold back meanwhile
            return postprocessor.postprocess(network.embed(examples))


def _chunk_examples(chunk) -> int:
    return max(1, int(chunk[2].shape[0]))


class VGGishModelHandler(ModelHandler):
    """RunInference handler: (key, chunk index, float32 [k, 96, 64]) -> (key, (chunk index, uint8 [k, 128])).

    One VGGish per worker process (load_model); chunks of several recordings are embedded in one call,
    batched up to `batch_size` examples. The examples are not kept in the output.
    """

    def __init__(
        self, checkpoint: str, pca: str, batch_size: int = DEFAULT_BATCH_SIZE, precision: str = "fp32"
    ):
        super().__init__()
        self._checkpoint = checkpoint
        self._pca = pca
        self._batch_size = batch_size
        self._precision = precision

    def load_model(self) -> _Embedder:
        return _Embedder(self._checkpoint, self._pca, self._precision)

    def run_inference(self, batch, model: _Embedder, inference_args=None) -> Iterable:
        if not batch:  # BatchElements can emit an empty batch when sizing by weight
            return []
        sizes = [chunk[2].shape[0] for chunk in batch]
        examples = batch[0][2] if len(batch) == 1 else np.concatenate([chunk[2] for chunk in batch])
        frames = model(examples)
        out, offset = [], 0
        for (key, chunk_index, _), size in zip(batch, sizes, strict=True):
            out.append((key, (chunk_index, frames[offset : offset + size])))
            offset += size
        return out

    def batch_elements_kwargs(self):
        return {
            "min_batch_size": self._batch_size,
            "max_batch_size": self._batch_size,
            "element_size_fn": _chunk_examples,
        }

    def get_num_bytes(self, batch) -> int:
        return sum(chunk[2].nbytes for chunk in batch)

    def get_metrics_namespace(self) -> str:
        return "VGGish"


def _failed_batch_errors(failure) -> Iterator[dict]:
    """Error rows for a batch RunInference could not embed (its recordings then fail the frame check).

    Args:
      failure: Beam's dead letter (batch of chunks, (exception type, message, traceback)).
    """
    batch, details = failure
    message = ": ".join(str(d) for d in details[:2]) if isinstance(details, tuple | list) else str(details)
    seen = set()
    for chunk in batch if isinstance(batch, list | tuple) else [batch]:
        key = chunk[0]
        if key not in seen:
            seen.add(key)
            yield error_row(key, "embed", "embed_failed", message)
