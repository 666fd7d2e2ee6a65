"""Embedding: chunks of network inputs -> frames of the run's embedding model, with RunInference.

Stage: scoring 4 (embed). `EmbeddingModelHandler`: (key, chunk index, inputs) -> (key, (chunk index,
frames)), batched across recordings, one network per worker, built from the run's
gunshot_core.embedding_models description: VGGish float32 [k, 96, 64] -> uint8 [k, 128] (VGGish + PCA
postprocessor; model files copied once per worker by `pipelines.scoring.model_cache`, see
`localize`), BirdNET float32 [k, 144000] -> float32 [k, 1024] (its fixed batch of 8 inside).
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
    """The embedding network could not be loaded on a worker.

    A BaseException on purpose: RunInference's dead-letter handling catches Exception, and a model
    that cannot load must fail the job loudly, not turn every recording into an error row.
    """


class _Embedder:
    """The embedding network of one worker (what EmbeddingModelHandler.load_model returns): a
    gunshot_core.embedding_models Embedder (VGGish + PCA postprocessor, or BirdNET).

    The model is built in a background thread started at construction, so decoding the first chunks
    overlaps with reading the model files and building the network; the first call waits for it.
    """

    def __init__(self, model, options: dict):
        self._model = model
        self._options = options
        self._embedder = None
        self._error = None
        COMPUTE_GATE.load_started()  # before the thread starts: decoders see it at once
        self._loader = threading.Thread(target=self._load, name=f"{model.name}-load", daemon=True)
        self._loader.start()

    def _load(self):
        try:
            self._load_models()
        finally:
            COMPUTE_GATE.load_finished()

    def _load_models(self):
        try:
            from gunshot_core import precision, startup

            # int8 and (with OpenVINO) bf16 need TensorFlow only to build their cached model
            if precision.uses_tensorflow(self._options.get("precision") or precision.FP32):
                startup.import_tensorflow(freeze=True)  # ~250,000 long-lived objects; no eager Keras
            # Networks run fixed-shape blocks, so embeddings (and every table) are identical however
            # RunInference groups chunks into batches.
            embedder = self._model.load(**self._options)
            embedder.prepare()  # compiled here, in the loader thread, not in the first batch
            self._embedder = embedder
        except BaseException as e:  # noqa: BLE001 - re-raised on first use
            self._error = e

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        """Network inputs of n frames -> [n, embedding_size] frames, independent of n and of the others."""
        self._loader.join()
        if self._error is not None:
            files = ", ".join(str(v) for k, v in sorted(self._options.items()) if k in ("checkpoint", "pca"))
            raise ModelLoadError(
                f"cannot load {self._model.display_name}" + (f" ({files})" if files else "") + f": {self._error!r}"
            )
        with COMPUTE_GATE.busy():  # decoders of this process hold back meanwhile
            return self._embedder.embed_inputs(inputs)


def _chunk_examples(chunk) -> int:
    return max(1, int(chunk[2].shape[0]))


def model_options(config) -> dict:
    """Options of `EmbeddingModel.load` for a scoring run: the model files (local copies on workers),
    precision and resampler. Only the default model takes the VGGish checkpoint and PCA files."""
    options = {"precision": config.precision}
    if config.model.is_default:
        options.update(checkpoint=config.checkpoint, pca=config.pca)
    return options


class EmbeddingModelHandler(ModelHandler):
    """RunInference handler: (key, chunk index, network inputs [k, ...]) -> (key, (chunk index,
    [k, embedding_size] frames)), for the run's embedding model (VGGish: float32 [k, 96, 64] ->
    uint8 [k, 128]; BirdNET: float32 [k, 144000] -> float32 [k, 1024]).

    One network per worker process (load_model); chunks of several recordings are embedded in one call,
    batched up to `batch_size` inputs. The inputs are not kept in the output.
    """

    def __init__(
        self,
        model,
        options: dict,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ):
        super().__init__()
        self._model = model
        self._options = options
        self._batch_size = batch_size

    def load_model(self) -> _Embedder:
        options = dict(self._options)
        for role in ("checkpoint", "pca"):
            if options.get(role):
                options[role] = localize(options[role])
        return _Embedder(self._model, options)

    def run_inference(self, batch, model: _Embedder, inference_args=None) -> Iterable:
        if not batch:  # BatchElements can emit an empty batch when sizing by weight
            return []
        sizes = [chunk[2].shape[0] for chunk in batch]
        inputs = batch[0][2] if len(batch) == 1 else np.concatenate([chunk[2] for chunk in batch])
        frames = model(inputs)
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
        return self._model.display_name


def make_model_handler(config) -> EmbeddingModelHandler:
    """The RunInference handler of a scoring run's embedding model and settings."""
    return EmbeddingModelHandler(config.model, model_options(config), config.batch_size)


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
