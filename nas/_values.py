"""The cost model's value distributions: Huffman code lengths of stored values for N(0, 1) weights.

Trained weights are modelled as Gaussian; pruning removes the smallest magnitudes. Used by
:mod:`nas.cost` (split from it to keep modules small).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from nas.storage import huffman_length

LLOYD_STEPS = 300  # converged to 0.01 bits on the reference cases


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


@lru_cache(maxsize=4096)
def value_huffman_bits(sparsity: float, quantization: str, bits: int | None, log2_n: int) -> float:
    """Huffman code length (bits per value) of the stored values, modelling trained weights as N(0, 1).

    Pruning removes ``|z| < t`` with ``P(|z| < t) = sparsity``. Codebooks: see
    :func:`_codebook_entropy` (``log2_n`` is the bit length of the weight count).
    Ternary codes use TWN's threshold ``0.7 * E|z|``.
    """
    t = _inv_phi((1.0 + sparsity) / 2.0) if sparsity > 0 else 0.0
    if quantization == "binary":
        return 1.0
    survivors = 2.0 * (1.0 - _phi(t))

    def mass(lo: float, hi: float) -> float:  # Gaussian mass of [lo, hi] outside (-t, t)
        a, b = max(lo, t), max(hi, t)
        pos = _phi(b) - _phi(a) if b > a else 0.0
        a, b = min(lo, -t), min(hi, -t)
        neg = _phi(b) - _phi(a) if b > a else 0.0
        return pos + neg

    if quantization == "ternary":
        # E|z| over survivors: 2 * phi_density(t) / survivors
        mean_abs = 2.0 * math.exp(-t * t / 2) / math.sqrt(2 * math.pi) / survivors
        delta = 0.7 * mean_abs
        return huffman_length(np.array([mass(-math.inf, -delta), mass(-delta, delta), mass(delta, math.inf)]))
    if quantization == "int8":
        return _int8_huffman(t, 2**log2_n)
    assert bits is not None
    return min(float(bits), _stored_codebook_entropy(t, bits, 2**log2_n))


_ENTROPIES: dict[str, float] | None = None


def _stored_codebook_entropy(t: float, bits: int, n: int) -> float:
    """:func:`_codebook_entropy`, kept on disk (``nas.files.cache_dir()``): each value costs tens of
    milliseconds and a search needs hundreds, in every worker process. Unreadable caches are ignored."""
    global _ENTROPIES
    import json

    from nas.files import cache_dir, write_atomic

    path = cache_dir() / f"codebook-huffman-{LLOYD_STEPS}.json"
    if _ENTROPIES is None:
        try:
            _ENTROPIES = {k: float(v) for k, v in json.loads(path.read_text()).items()}
        except (OSError, ValueError, AttributeError, TypeError):
            _ENTROPIES = {}
    key = f"{t!r}|{bits}|{n}"
    if key not in _ENTROPIES:
        _ENTROPIES[key] = _codebook_entropy(t, bits, n)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:  # merge what other processes stored meanwhile
                _ENTROPIES = {**json.loads(path.read_text()), **_ENTROPIES}
            except (OSError, ValueError, TypeError):
                pass
            write_atomic(path, json.dumps(_ENTROPIES, sort_keys=True))
        except OSError:
            pass  # a read-only home: compute again next time
    return _ENTROPIES[key]


def _codebook_entropy(t: float, bits: int, n: int) -> float:
    """Entropy of k-means codebook indices over N(0, 1) weights with ``|z| >= t``.

    Linear initialization over ``[-zmax, zmax]``, ``zmax`` the expected extreme of
    ``n`` weights, then Lloyd's steps on the survivors' density (as the real
    k-means does: centroids stranded in the pruned band move out, spreading the
    indices). Vectorized; called once per (sparsity, bits, size bucket).
    """
    import numpy as np
    from scipy.special import ndtr, ndtri

    def density(z: np.ndarray) -> np.ndarray:
        finite = np.isfinite(z)
        return np.where(finite, np.exp(-np.where(finite, z, 0.0) ** 2 / 2) / math.sqrt(2 * math.pi), 0.0)

    def cells(centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # mass and first moment per cell
        edges = np.concatenate([[-np.inf], (centers[1:] + centers[:-1]) / 2, [np.inf]])
        mass = np.zeros(len(centers))
        moment = np.zeros(len(centers))
        for a, b in ((np.maximum(edges[:-1], t), np.maximum(edges[1:], t)),
                     (np.minimum(edges[:-1], -t), np.minimum(edges[1:], -t))):
            inside = b > a
            mass += np.where(inside, ndtr(b) - ndtr(a), 0.0)
            moment += np.where(inside, density(a) - density(b), 0.0)
        return mass, moment

    zmax = float(ndtri(1.0 - 1.0 / (2.0 * n)))
    centers = np.linspace(-zmax, zmax, 2**bits)
    for _ in range(LLOYD_STEPS):
        mass, moment = cells(centers)
        centers = np.sort(np.where(mass > 1e-12, moment / np.maximum(mass, 1e-300), centers))
    mass, _ = cells(centers)
    return huffman_length(mass)


def _int8_huffman(t: float, n: int) -> float:
    """Huffman code length of int8 codes ``round(z / step)``, ``step = zmax / 127``, over N(0, 1) weights with
    ``|z| >= t``: ``zmax`` the expected extreme of ``n`` weights (the scale is per output channel and a
    channel holds fewer weights, so this is an estimate on the short side by a fraction of a bit)."""
    from scipy.special import ndtr, ndtri

    step = float(ndtri(1.0 - 1.0 / (2.0 * n))) / 127
    edges = (np.arange(-127, 129) - 0.5) * step
    edges[0], edges[-1] = -np.inf, np.inf
    lo, hi = edges[:-1], edges[1:]
    mass = np.clip(ndtr(np.maximum(hi, t)) - ndtr(np.maximum(lo, t)), 0, None) + \
        np.clip(ndtr(np.minimum(hi, -t)) - ndtr(np.minimum(lo, -t)), 0, None)
    return huffman_length(mass)


def _inv_phi(p: float) -> float:
    """Inverse of the standard normal CDF by bisection (exact to 1e-10, no scipy import)."""
    lo, hi = -10.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _phi(mid) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
