"""Write nas/codebook-huffman.json: the cost model's Huffman code lengths of k-means codebook indices
(:func:`nas._values._codebook_entropy`) for every sparsity and codebook size of the built-in spaces, at
every layer size, so that a search on a fresh machine does not spend minutes clustering samples.

    .venv/bin/python scripts/codebook_table.py
"""

from __future__ import annotations

import json

from tqdm import tqdm

import nas
from nas._values import SHIPPED, _codebook_entropy, _entropy_key, _inv_phi
from nas.space import builtin_spaces


def main() -> None:
    sparsities, bits = {0.0}, set()
    for name in builtin_spaces():
        comp = nas.load_space(name).config.compression
        sp = comp.sparsity
        sparsities |= {round(s, 4) for s in (sp if isinstance(sp, list) else [*sp.conv, *sp.linear])}
        bits |= {b for b in comp.codebook_bits if b is not None}
    keys = {}
    for s in sorted(sparsities):
        t = _inv_phi((1.0 + s) / 2.0) if s > 0 else 0.0
        for b in sorted(bits):
            for log2_n in range(1, 31):
                keys.setdefault(_entropy_key(t, b, 2**log2_n), (t, b, 2**log2_n))
    table = {}
    for key, args in tqdm(sorted(keys.items()), desc="codebook entropies", unit="key"):
        table[key] = _codebook_entropy(*args)
    SHIPPED.write_text(json.dumps(table, sort_keys=True, indent=0) + "\n")
    print(f"wrote {SHIPPED} ({len(table)} entries: sparsities {sorted(sparsities)}, bits {sorted(bits)})")


if __name__ == "__main__":
    main()
