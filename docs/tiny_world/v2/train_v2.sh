#!/usr/bin/env bash
# Tiny world v2 training, resumable: re-run this script after any stop.
# Code: a git worktree of the repository at the commit that added the held-out stop and the w/o-RA stage
# (stages 1-2 ran on 5740bfa up to forward step 800; they differ only in the per-step seed derivation).
# Session 3 (2026-12-01): the forward stage was cut from 4000 to UNET_STEPS steps at step 1800 to fit the
# CPU budget (the cosine schedule re-planned to the new total from there on); the adapter capped at 600 steps
# (constant learning rate) at its step 100, so that the ablation and the table fit the session.
cd /work/runs
export PYTHONPATH=/work/runs/code_v2b/src OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec python -c "
from inbetween.toyworld.recipe import TinyWorldRecipe, train_tiny_world
print('wrote', train_tiny_world('/work/runs/tiny_world_v2', TinyWorldRecipe(unet_steps=${UNET_STEPS:-3000}, adapter_steps=${ADAPTER_STEPS:-600})), flush=True)
" >> /work/runs/train_v2.log 2>&1
