# Session 21 (issue #13): k-means on a sample of the tokens (`SemanticConfig(kmeans_sample=n)`, session 20) against one
# warm iteration (`warm_iters=1`) as ways to bring semantic's planning under 5 % of its sparse attention, and whether
# the ordered block means (session 20) are slower than the gather + scatter-add at Wan-1.3B 480p.
# After staging .gpu/p1 and finishing .gpu/p2 (see bench/gpu_session4.sh).
#   plan:  the plan by stage at the three shapes (models not needed); the JSON is written after every shape.
#   qual:  video against dense on the trained small model at 768x1280 (models in the tree, a warm call).
#   steps: HunyuanVideo 720p per step, the preset against sample 4 and warm_iters 1.
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
PACKED='"method": "semantic", "block_size": 128, "pack_pieces": true, "cluster_order": "similarity", "dense_steps": 0.2'
case "${1:-plan}" in
plan)
  timeout 560 python3 bench/profile_semantic_plan.py $OUT/profile-semantic-packed-plan-sample.json \
    hunyuan-720p,wan14b-720p,wan1.3b-480p "preset,sample 4,warm_iters 1" 2>&1 | grep -E "^wan|^hun|Error" | cut -c1-900
  ;;
qual)
  timeout 560 python3 -m dit_sparse.eval.quality --model small --device cuda --dtype bfloat16 --prompts 2 --steps 20 \
    --height 768 --width 1280 --densities '' --no-random --methods '' --variants "{
      \"packed r3 cfg\": {$PACKED, \"refresh_every\": 3, \"share_cfg_layouts\": true},
      \"packed r3 cfg sample 2\": {$PACKED, \"refresh_every\": 3, \"share_cfg_layouts\": true, \"kmeans_sample\": 2},
      \"packed r3 cfg sample 4\": {$PACKED, \"refresh_every\": 3, \"share_cfg_layouts\": true, \"kmeans_sample\": 4},
      \"packed r3 cfg warm_iters 1\": {$PACKED, \"refresh_every\": 3, \"share_cfg_layouts\": true, \"warm_iters\": 1}}" \
    --out $OUT/quality-small-768p-semantic-kmeans-sample.json 2>&1 | grep -vE "^ *$|Warning|warn" | tail -6
  ;;
steps)
  timeout 400 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --layers 15 --dense-variants none \
    --methods semantic-packed-r3,semantic-packed-s4-r3,semantic-packed-w1-r3,fixed-0.25 \
    --out $OUT/step-hunyuan-720p-semantic-kmeans-sample.json 2>&1 | grep -E "^hun|Error|wrote" | cut -c1-300
  ;;
esac
# Part two, after the presets took warm_iters=1: planning per sparse call at the presets' schedules (README pattern
# table), and the packing with the ordered means against the gather + scatter-add at the two other Wan sizes (heads x
# tokens between Wan-1.3B 480p, where the ordered means measured slower, and the 720p shapes, where they were faster).
case "${1:-}" in
pattern)
  for s in hunyuan-720p wan14b-720p wan1.3b-480p; do
    timeout 150 python3 -m dit_sparse.eval.bench pattern --shape $s --presets --qkv photo --methods semantic \
      --out $OUT/pattern-$s-semantic-warm1.json 2>&1 | grep -E "semantic|Error" | cut -c1-300
  done
  timeout 250 python3 bench/profile_semantic_plan.py $OUT/profile-semantic-packed-plan-means-sizes.json \
    wan1.3b-720p,wan14b-480p preset 2>&1 | grep -E "^wan|Error" | cut -c1-900
  ;;
esac
# Part three: the plan launched behind one sparse attention call (`bench pattern` since session 21 also reports
# plan_behind_attention_ms): how much of a small plan's isolated time is host launches a pipeline hides.
case "${1:-}" in
behind)
  for sm in wan1.3b-480p:semantic,draft hunyuan-720p:semantic wan14b-720p:semantic; do
    timeout 150 python3 -m dit_sparse.eval.bench pattern --shape ${sm%%:*} --presets --qkv photo --methods ${sm#*:} \
      --out $OUT/pattern-${sm%%:*}-behind.json 2>&1 | grep -E "semantic|draft|Error" | cut -c1-400
  done
  ;;
esac
