# Session 18 (issue #13; all four parts ran at 69fdd4a: prof with wan1.3b-480p only): the packed plan's similarity order kept while k-means is warm-started
# (SemanticConfig(keep_cluster_order=True)), and the whole packing compiled as one graph (`packed_plan`). After staging
# .gpu/p1 and finishing .gpu/p2 (see bench/gpu_session4.sh; dit_sparse/pipelines/{tiny,small}_model out of the tree for
# the call that carries a part; in the tree for `qual`).
#   pat:   `bench pattern --presets --qkv photo` at the three shapes: planning per sparse call at the preset's period
#          against the sparse attention it serves (session 17 before the change: 9.2 / 15.6 / 71 %).
#   prof:  the packed plan by stage (similarity order, compiled packing, cold plan), Wan-1.3B 480p and Wan-14B 720p,
#          against the order recomputed in every plan and the 64-token pieces.
#   qual:  video on the trained small model at 768x1280 (~135-token clusters), packed with the order kept against
#          recomputed in every plan (session 17: packed 34.73 dB at density 0.54).
#   steps: per denoising step at the preset's shape, Wan-14B 720p (10 blocks) and Wan-1.3B 480p, yardstick in the run.
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
case "${1:-pat}" in
pat)
  for shape in wan1.3b-480p wan14b-720p hunyuan-720p; do
    timeout 170 python3 -m dit_sparse.eval.bench pattern --shape $shape --presets --qkv photo --methods semantic \
      --out $OUT/pattern-$shape-semantic-packed-kept-order.json 2>&1 | grep -vE "^ *$|Warning|warn" | tail -3 | cut -c1-400
  done
  ;;
prof)
  timeout 300 python3 bench/profile_semantic_plan.py $OUT/profile-semantic-packed-kept-order.json \
    ${2:-wan1.3b-480p,wan14b-720p} 2>&1 | grep -E "^wan|^hun|Error" | cut -c1-600
  ;;
qual)
  timeout 400 python3 -m dit_sparse.eval.quality --model small --device cuda --dtype bfloat16 --prompts 1 --steps 20 \
    --height 768 --width 1280 --densities '' --no-random --methods '' --variants '{"packed": {"method": "semantic", "block_size": 128, "pack_pieces": true, "cluster_order": "similarity"}, "packed order every plan": {"method": "semantic", "block_size": 128, "pack_pieces": true, "cluster_order": "similarity", "keep_cluster_order": false}}' \
    --out $OUT/quality-small-768p-semantic-packed-kept-order.json 2>&1 | grep -vE "^ *$|Warning|warn" | tail -8
  ;;
steps)
  # Ran (69fdd4a) as one command line in this order, with timeouts 170 / 240.
  timeout 170 python3 -m dit_sparse.eval.bench step --model wan1.3b-480p --dense-variants none \
    --methods semantic-packed-r2-cfg,fixed-0.25 \
    --out $OUT/step-wan1.3b-480p-semantic-packed-kept-order.json 2>&1 | grep -E "^wan|Error|wrote" | cut -c1-300
  timeout 240 python3 -m dit_sparse.eval.bench step --model wan14b-720p --layers 10 --dense-variants none \
    --methods semantic-packed-r2-cfg,fixed-0.25 \
    --out $OUT/step-wan14b-720p-semantic-packed-kept-order.json 2>&1 | grep -E "^wan|Error|wrote" | cut -c1-300
  ;;
esac
