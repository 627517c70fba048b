#!/bin/bash
# Issue 21: the full method on the shipped tiny world under fast and cheaper candidates (50 held-out pairs each).
cd /work/runs/t21
run() { name=$1; shift; OMP_NUM_THREADS=1 /usr/bin/time -f "$name %e s wall" inbetween toyworld evaluate --methods full --preset fast "$@" --out $name --resume >> $name.log 2>&1; }
run fast15s --steps 15 --shared-unconditional
run fast --no-shared-unconditional
run fast20s --steps 20 --shared-unconditional
run fasts --shared-unconditional
echo ALLDONE
