# Session 24 (issue #13), after staging .gpu/p1 and finishing .gpu/p2.
#   kernel:  the kernel benchmark at the three step shapes with its three clocks (one call from an idle GPU, calls
#            queued back to back, the kernels' own CUDA time): FlashAttention-4, our Triton kernel and FlexAttention
#            on random layouts, for the README's kernel table (the one there was an H100 run of 2026-11-23).
#   qual:    video against dense on the trained small model at 768x1280 (34,560 tokens, Wan-1.3B 480p has 32,760; a
#            warm call with the models in the tree): Wan's radial, draft and tile presets as they are, and with fewer
#            dense steps. Semantic's Wan preset was measured there in session 23 (35.15 dB,
#            quality-small-768p-semantic-fused-means.json).
# The key-loop probe (bench/probe_triton_loop.py) needs no Diffusers and ran on a bare machine:
#   python3 bench/probe_triton_loop.py $OUT/probe-triton-loop-clocks.json
#   PROBE_VARIANTS=... python3 bench/probe_triton_loop.py $OUT/probe-triton-loop-vec-hunyuan.json 119040,24 0.25,0.1
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
RADIAL='"method": "radial", "dense_layers": 1, "decay": 0.2, "fast_dense": true'
DRAFT='"method": "draft", "dense_layers": 1, "refresh_every": 4, "share_cfg_layouts": true, "fast_dense": true, "estimate": "pooled"'
TILE='"method": "tile", "dense_layers": 1, "tile": [2, 8, 8], "window": [4096, 3, 3], "blocks": "fixed", "fast_dense": true'
case "${1:-kernel}" in
kernel)
  timeout 560 python3 -m dit_sparse.eval.bench kernel --shapes wan1.3b-480p,wan14b-720p,hunyuan-720p \
    --densities 1.0,0.5,0.25,0.1 --backends fa4,triton,flex --reps 7 --out $OUT/kernel-clocks.json 2>&1 \
    | grep -E "^wan|^hun|Error|wrote" | cut -c1-260
  ;;
qual)
  timeout 560 python3 -m dit_sparse.eval.quality --model small --device cuda --dtype bfloat16 --prompts 2 --steps 20 \
    --height 768 --width 1280 --densities '' --no-random --methods '' --variants "{
      \"radial wan\": {$RADIAL, \"dense_steps\": 0.25},
      \"draft wan\": {$DRAFT, \"dense_steps\": 0.1, \"density\": 0.35},
      \"tile wan\": {$TILE, \"dense_steps\": 0.25},
      \"radial ds0.1\": {$RADIAL, \"dense_steps\": 0.1},
      \"draft d0.25 ds0.1\": {$DRAFT, \"dense_steps\": 0.1, \"density\": 0.25},
      \"draft d0.5 ds0.1\": {$DRAFT, \"dense_steps\": 0.1, \"density\": 0.5}}" \
    --out $OUT/quality-small-768p-wan-presets.json 2>&1 | grep -vE "^ *$|Warning|warn" | tail -9
  ;;
esac
# Part three (no Diffusers): the library kernel on Diffusers' (B, L, H, D) memory against head-major memory, and with
# K / V copied to head-major inside the call, each tuned for itself, at both probe shapes.
case "${1:-}" in
layouts)
  PROBE_VARIANTS=indexed timeout 250 python3 bench/probe_triton_loop.py $OUT/probe-triton-loop-layouts.json \
    32768,12 1.0,0.25,0.1 2>&1 | grep -E "^[a-z_0-9-]+ [{]" | cut -c1-200
  PROBE_VARIANTS=indexed timeout 300 python3 bench/probe_triton_loop.py $OUT/probe-triton-loop-layouts-hunyuan.json \
    119040,24 0.25,0.1 2>&1 | grep -E "^[a-z_0-9-]+ [{]" | cut -c1-200
  ;;
esac
