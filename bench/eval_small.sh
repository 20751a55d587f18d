#!/usr/bin/env bash
# One GPU run for issue "content-aware patterns that choose well": on the trained `small` model (8,640 tokens), the
# oracle-relative fidelity of each method and the video quality table (presets, matched density, random baseline),
# then the planning overhead of the selection rules at Wan-1.3B 480p (random q/k: cost only).
#   <install step: diffusers importable> && bash bench/eval_small.sh      (writes JSON under $OUT)
# These are the settings that produced bench/results/oracle-small.json and quality-small.json on 2026-12-01 (H200):
# the full quality run (3 prompts, 20 steps, 3 densities, float32) did not fit in 240 s, so 1 prompt, 10 steps,
# bfloat16 and one matched density; the oracle uses 2 layers x 2 steps.
set -u
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TQDM_DISABLE=1
OUT=${OUT:?set OUT to the folder that comes back}
LOG=$OUT/eval_small.log
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$LOG"
timeout 240 python3 -m dit_sparse.eval.oracle --model small --device cuda --layers 2,4 --steps 5,10 \
  --out "$OUT/oracle-small.json" 2>&1 | grep -v "^Loading" | tee -a "$LOG" | tail -n 20
timeout 240 python3 -m dit_sparse.eval.quality --model small --device cuda --dtype bfloat16 --prompts 1 --steps 10 \
  --densities 0.25 --out "$OUT/quality-small.json" 2>&1 | grep -v "^Loading" | tee -a "$LOG" | tail -n 25
timeout 90 python3 -m dit_sparse.eval.bench pattern --shape wan1.3b-480p --methods radial,draft,semantic \
  --out "$OUT/pattern-wan1.3b-480p.json" 2>&1 | tee -a "$LOG" | tail -n 5
