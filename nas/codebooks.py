"""1-d k-means codebooks (Deep Compression's weight sharing): numpy and scikit-learn only.

A floor below :mod:`nas.compress.sharing`, which clusters real layers with it, and :mod:`nas._values`,
which runs the same code on a sample to price a codebook's Huffman code.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from nas.errors import CompressError

Init = Literal["linear", "density", "random"]
INITS = ("linear", "density", "random")


def _init_centroids(values: np.ndarray, k: int, init: Init, rng: np.random.Generator) -> np.ndarray:
    if init == "linear":
        return np.linspace(values.min(), values.max(), k)
    if init == "density":
        return np.quantile(values, np.linspace(0.0, 1.0, k))
    return rng.choice(values, size=k, replace=False)


def kmeans_codebook(values: np.ndarray, bits: int, init: Init = "linear", *, seed: int = 0,
                    max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(centroids of length ``2**bits``, code of each value) by 1-d k-means from ``init``.

    When the values have fewer distinct entries than ``2**bits``, each distinct
    value is its own centroid and the codebook is padded by repeating the last one
    (k-means would have nothing to do).
    """
    if init not in INITS:
        raise CompressError(f"weight sharing: init must be one of {list(INITS)}, but got {init!r}.")
    if not 1 <= bits <= 16:
        raise CompressError(f"weight sharing: bits must be in [1, 16], but got {bits}.")
    k = 2**bits
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return np.zeros(k, dtype=np.float32), np.zeros(0, dtype=np.int64)
    distinct = np.unique(values)
    if distinct.size <= k:
        centroids = np.concatenate([distinct, np.full(k - distinct.size, distinct[-1])])
        return centroids.astype(np.float32), np.searchsorted(distinct, values).astype(np.int64)
    from sklearn.cluster import KMeans  # imported here: the `nas` command should not pay for it at start-up

    start = _init_centroids(values, k, init, np.random.default_rng(seed))
    if np.unique(start).size < k:  # degenerate quantiles (many equal weights): fall back to linear
        start = np.linspace(values.min(), values.max(), k)
    km = KMeans(n_clusters=k, init=start.reshape(-1, 1), n_init=1, max_iter=max_iter, random_state=seed)
    km.fit(values.reshape(-1, 1))
    centroids = km.cluster_centers_.ravel().astype(np.float32)
    # assign with the float32 centroids actually stored, so codes and codebook agree exactly
    codes = np.abs(values.reshape(-1, 1) - centroids.reshape(1, -1).astype(np.float64)).argmin(axis=1)
    return centroids, codes.astype(np.int64)
