"""Paired differences (candidate - fast) of the tiny-world per-pair metrics, mean +- 95 % Student-t half-width."""

import json
import sys

import numpy as np
from scipy import stats


def load(name):
    return json.load(open(f"{name}/per_pair.json"))["results"]["full method"]


base = load("fast")
for name in sys.argv[1:]:
    cand = load(name)
    cells = []
    for metric in ("hit_rate", "centre_error", "miss_rate", "psnr"):
        diff = np.array([c[metric] - b[metric] for c, b in zip(cand, base, strict=True)])
        half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / len(diff) ** 0.5
        cells.append(f"{metric} {diff.mean():+.3f} ± {half:.3f}")
    print(f"{name}: " + " | ".join(cells))
