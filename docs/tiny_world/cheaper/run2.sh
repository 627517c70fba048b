#!/bin/bash
# Issue 21, round 2: cheaper fast without the shared unconditional row (which costs hit rate on the tiny world).
cd /work/runs/t21
run() { name=$1; shift; OMP_NUM_THREADS=1 /usr/bin/time -f "$name %e s wall" inbetween toyworld evaluate --methods full --preset fast "$@" --out $name --resume >> $name.log 2>&1; }
if [ "$1" = A ]; then run fast15 --steps 15; run fast12 --steps 12; fi
if [ "$1" = B ]; then run fastnr --noise-injection-steps 0; run fast20nr --steps 20 --noise-injection-steps 0; fi
echo ALLDONE $1
