#!/bin/bash
# Issue 21, round 3: 100 more held-out pairs (seeds from 90000050) for fast and lite, to tighten the paired interval.
cd /work/runs/t21
while pgrep -f presets_end_to_end.py > /dev/null; do sleep 10; done
run() { name=$1; shift; OMP_NUM_THREADS=1 /usr/bin/time -f "$name %e s wall" inbetween toyworld evaluate --methods full --pairs 100 --first-seed 90000050 "$@" --out $name --resume >> $name.log 2>&1; }
run more-fast --preset fast &
run more-lite --preset fast --steps 15 &   # run as `--preset lite`, a preset of exactly these options then
wait
echo ALLDONE
