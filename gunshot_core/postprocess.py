"""VGGish postprocessing: PCA, whitening, clipping and 8-bit quantisation (vggish_postprocess.py).

The official AudioSet embeddings are these uint8 vectors; heads consume them.
"""

import os

import numpy as np

from gunshot_core import params
from gunshot_core.errors import ModelFileError


class Postprocessor:
    """Applies the PCA parameters of `vggish_pca_params.npz` to raw embeddings."""

    def __init__(self, pca_eigen_vectors: np.ndarray, pca_means: np.ndarray):
        """
        Args:
          pca_eigen_vectors: float [128, 128], rows are the principal components.
          pca_means: float [128, 1] (or [128]), subtracted before projection.
        """
        vectors = np.asarray(pca_eigen_vectors, dtype=np.float64)
        means = np.asarray(pca_means, dtype=np.float64).reshape(-1, 1)
        size = params.EMBEDDING_SIZE
        if vectors.shape != (size, size):
            raise ModelFileError(f"pca_eigen_vectors must be [{size}, {size}], got {vectors.shape}")
        if means.shape != (size, 1):
            raise ModelFileError(f"pca_means must have {size} values, got shape {np.shape(pca_means)}")
        self.pca_eigen_vectors = vectors
        self.pca_means = means

    @classmethod
    def from_npz(cls, path: str | os.PathLike) -> "Postprocessor":
        """Loads `vggish_pca_params.npz` (keys pca_eigen_vectors, pca_means); no pickles allowed."""
        if not os.path.exists(path):
            raise ModelFileError(
                f"PCA parameters not found: {path}. Run `gunshot models download` or pass --pca."
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(data[params.PCA_EIGEN_VECTORS_NAME], data[params.PCA_MEANS_NAME])
        except KeyError as e:
            raise ModelFileError(f"{path}: missing PCA array {e}") from e
        except (OSError, ValueError) as e:
            raise ModelFileError(f"{path}: not a readable .npz file: {e}") from e

    def postprocess(self, embeddings: np.ndarray) -> np.ndarray:
        """Quantised embeddings.

        Args:
          embeddings: float [n, 128] raw VGGish embeddings.
        Returns:
          uint8 [n, 128]: PCA-projected, clipped to [-2, 2] and scaled to 0..255 (truncating).
        """
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[1] != params.EMBEDDING_SIZE:
            raise ValueError(f"embeddings must be [n, {params.EMBEDDING_SIZE}], got shape {embeddings.shape}")
        pca_applied = (self.pca_eigen_vectors @ (embeddings.T - self.pca_means)).T
        clipped = np.clip(pca_applied, params.QUANTIZE_MIN_VAL, params.QUANTIZE_MAX_VAL)
        scale = 255.0 / (params.QUANTIZE_MAX_VAL - params.QUANTIZE_MIN_VAL)
        return ((clipped - params.QUANTIZE_MIN_VAL) * scale).astype(np.uint8)
