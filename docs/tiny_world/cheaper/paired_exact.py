"""Exact-denoiser world: consistent-with-both-keyframes per pair, candidate minus fast, paired (200 pairs, seed 0)."""

import sys

import numpy as np
from scipy import stats

from inbetween.toyworld.exact import study
from inbetween.toyworld.exact.config import SamplerStudyConfig
from inbetween.toyworld.exact.world import build_exact_world

config = SamplerStudyConfig()
world = build_exact_world(config.world)
videos = study.draw_pairs(world, config.pairs, config.seed)
tol = study.frame_tolerance(world)
rows = study.study_rows()


def flags(name):
    run = study.run_row(world, rows[name], videos, config.seed)
    s = study.score_outputs(world, run.outputs, videos, tol)
    return np.asarray(s["consistent"], dtype=float)


base = flags("fast")
print(f"fast: {base.mean():.3f}")
for name in sys.argv[1:]:
    f = flags(name)
    d = f - base
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / len(d) ** 0.5
    print(f"{name}: {f.mean():.3f}, minus fast {d.mean():+.3f} ± {half:.3f}")
