"""The cost model's value distributions: Huffman code lengths of stored values for N(0, 1) weights.

Trained weights are modelled as Gaussian; pruning removes the smallest magnitudes. Used by
:mod:`nas.cost` (split from it to keep modules small).
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from nas.storage import huffman_length

#: The sample :func:`_codebook_entropy` clusters (survivors of a layer's weights, at most this many), and its seeds.
CODEBOOK_SAMPLE = 8192
CODEBOOK_SEEDS = (0, 1)


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
#: :func:`_codebook_entropy` of the built-in spaces' sparsities and codebook sizes, computed once and
#: shipped (``scripts/codebook_table.py`` writes it), so that a fresh machine does not cluster for minutes.
SHIPPED = Path(__file__).with_name("codebook-huffman.json")


def _survivors(t: float, n: int) -> int:
    """The sample :func:`_codebook_entropy` clusters for ``n`` weights pruned below ``|z| < t``."""
    from scipy.special import ndtr

    return min(max(2, round(n * 2.0 * (1.0 - float(ndtr(t))))), CODEBOOK_SAMPLE)


def _entropy_key(t: float, bits: int, n: int) -> str:
    return f"{t!r}|{bits}|{_survivors(t, n)}"  # layers past the sample size share one figure


def _stored_codebook_entropy(t: float, bits: int, n: int) -> float:
    """:func:`_codebook_entropy` from the shipped table, else kept on disk (``nas.files.cache_dir()``):
    each value clusters a sample (up to half a second), in every worker process. Unreadable caches are ignored."""
    global _ENTROPIES
    import json

    from nas.files import cache_dir, write_atomic

    path = cache_dir() / f"codebook-huffman-kmeans-{CODEBOOK_SAMPLE}x{len(CODEBOOK_SEEDS)}.json"
    if _ENTROPIES is None:
        _ENTROPIES = {}
        for source in (SHIPPED, path):
            try:
                _ENTROPIES.update({k: float(v) for k, v in json.loads(source.read_text()).items()})
            except (OSError, ValueError, AttributeError, TypeError):
                pass
    key = _entropy_key(t, bits, n)
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
    """Huffman code length of the container's own k-means codebook indices over N(0, 1) weights with ``|z| >= t``.

    The container's k-means (:func:`nas.codebooks.kmeans_codebook`: linear initialization,
    scikit-learn's Lloyd) run on a seeded sample of the survivors of ``n`` weights (at most
    :data:`CODEBOOK_SAMPLE`), averaged over :data:`CODEBOOK_SEEDS`. Lloyd's steps on the exact
    density missed the files by up to 1.1 bits per value: scikit-learn moves the centroids that
    pruning stranded in the empty band out to the far points, and stops at its tolerance, which
    a model of the density does not see; running the same code on a sample does.
    """
    from scipy.special import ndtr, ndtri

    from nas.codebooks import kmeans_codebook

    lo = float(ndtr(t))  # survivors: |z| >= t, i.e. P(z >= t) on each side
    m = _survivors(t, n)
    lengths = []
    for seed in CODEBOOK_SEEDS:
        rng = np.random.default_rng(seed)
        values = ndtri(lo + (1.0 - lo) * rng.random(m)) * rng.choice([-1.0, 1.0], m)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn: fewer distinct values than clusters in a tiny sample
            _, codes = kmeans_codebook(values, bits, seed=seed)
        lengths.append(huffman_length(np.bincount(codes, minlength=2**bits)))
    return float(np.mean(lengths))


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
