# Session 23 (issue #13), after staging .gpu/p1 and finishing .gpu/p2.
#   fused:   semantic's joint plan with the clusters' means from its pieces' [q, k] sums against k-means' own update
#            (bench/probe_fused_means.py), at the three step shapes' presets on photographic q / k.
#   qual:    video against dense on the trained small model at 768x1280 (models in the tree, a warm call): the preset
#            after session 22's trims and session 23's fused means, against session 21's numbers.
#   step:    the Wan-1.3B 480p step at the preset, and the pattern table's row.
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
PACKED='"method": "semantic", "block_size": 128, "pack_pieces": true, "cluster_order": "similarity", "dense_steps": 0.2'
case "${1:-fused}" in
fused)
  timeout 420 python3 bench/probe_fused_means.py $OUT/probe-fused-means.json wan1.3b-480p,hunyuan-720p,wan14b-720p \
    2>&1 | grep -E "^hun|^wan|Error" | cut -c1-1500
  ;;
qual)
  timeout 400 python3 -m dit_sparse.eval.quality --model small --device cuda --dtype bfloat16 --prompts 2 --steps 20 \
    --height 768 --width 1280 --densities '' --no-random --methods '' --variants "{
      \"packed r3 cfg\": {$PACKED, \"refresh_every\": 3, \"share_cfg_layouts\": true},
      \"packed r3 cfg warm_iters 1\": {$PACKED, \"refresh_every\": 3, \"share_cfg_layouts\": true, \"warm_iters\": 1}}" \
    --out $OUT/quality-small-768p-semantic-fused-means.json 2>&1 | grep -vE "^ *$|Warning|warn" | tail -6
  ;;
step)
  timeout 150 python3 -m dit_sparse.eval.bench pattern --shape wan1.3b-480p --presets --qkv photo --methods semantic \
    --out $OUT/pattern-wan1.3b-480p-semantic-fused-means.json 2>&1 | grep -E "semantic|Error" | cut -c1-400
  timeout 300 python3 -m dit_sparse.eval.bench step --model wan1.3b-480p --dense-variants none --profile \
    --methods semantic-packed-w1-r3-cfg,fixed-0.25 --out $OUT/step-wan1.3b-480p-semantic-fused-means.json 2>&1 \
    | grep -E "^wan|Error|wrote" | cut -c1-300
  ;;
esac
# Part two, after the pair's sums took the Triton pass at every size (block_mass.ORDERED_PAIR_MIN_ROWS): the probe at
# Wan-1.3B 480p and the pattern table's rows at the three shapes.
case "${1:-}" in
pair)
  timeout 200 python3 bench/probe_fused_means.py $OUT/probe-fused-means-pair.json wan1.3b-480p 2>&1 \
    | grep -E "^wan|Error" | cut -c1-1500
  for s in wan1.3b-480p hunyuan-720p wan14b-720p; do
    timeout 150 python3 -m dit_sparse.eval.bench pattern --shape $s --presets --qkv photo --methods semantic \
      --out $OUT/pattern-$s-semantic-fused-pair-sums.json 2>&1 | grep -E "semantic|Error" | cut -c1-400
  done
  ;;
esac
# Part three: our Triton kernel under fixed launch configs (64-row query tiles, two programs per SM, stages), against
# the autotuned one, at Wan-1.3B 480p and HunyuanVideo 720p, densities 0.25 / 0.10 (issue #13 item 2).
case "${1:-}" in
configs)
  timeout 500 python3 bench/probe_triton_configs.py $OUT/probe-triton-configs.json wan1.3b-480p,hunyuan-720p 2>&1 \
    | grep -E "^wan|^hun|Error" | cut -c1-700
  ;;
esac
# Part four: the HunyuanVideo 720p step at the preset's row with the GPU time by kernel kind (as session 22's
# `profile`), after the fused cluster means: planning's share of a real step.
case "${1:-}" in
profile)
  timeout 400 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --layers 15 --dense-variants none --profile \
    --methods semantic-packed-w1-r3,fixed-0.25 --out $OUT/step-hunyuan-720p-semantic-fused-profile.json 2>&1 \
    | grep -E "^hun|Error|wrote" | cut -c1-300
  ;;
esac
# Part five: the persistent Triton kernel (DIT_SPARSE_TRITON_PERSISTENT=1) against the same config one program per
# tile, at Wan-1.3B 480p and HunyuanVideo 720p, densities 0.25 / 0.10. Run at commit 2c68249; the kernel (12-31 %
# slower) and the probe's persistent mode were removed after it, so this part needs that commit checked out.
case "${1:-}" in
persistent)
  timeout 400 python3 bench/probe_triton_configs.py $OUT/probe-triton-persistent.json wan1.3b-480p,hunyuan-720p \
    0.25,0.1 persistent 2>&1 | grep -E "^wan|^hun|Error|error" | cut -c1-600
  ;;
esac
