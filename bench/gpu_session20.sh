# Session 20 (issue #13): how often semantic's packed layout must be planned, on the trained small model.
# After staging .gpu/p1 and finishing .gpu/p2 (see bench/gpu_session4.sh); dit_sparse/pipelines/{tiny,small}_model in
# the tree (a warm call without carry).
#   drift: the packed preset's reuse penalty across steps per layer (r = 1, 2, 4) on small's captured attention.
#   qual:  video against dense on small at 768x1280 (Wan-14B's cluster size), 20 steps, 2 prompts, CFG 5: the packed
#          layout with Wan's schedule (20 % dense steps, CFG branches sharing the plan) planned every 1 / 2 / 3 / 4
#          sparse steps, and top_p 0.8 / 0.7 at r = 2 (the density / quality trade-off).
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
PACKED='"method": "semantic", "block_size": 128, "pack_pieces": true, "cluster_order": "similarity", "dense_steps": 0.2'
case "${1:-drift}" in
drift)
  timeout 300 python3 -m dit_sparse.eval.drift --model small --device cuda --methods semantic \
    --variants "{\"packed\": {$PACKED}}" --out $OUT/drift-small-packed.json 2>&1 | grep -vE "^ *$|Warning|warn" | tail -12
  ;;
qual)
  timeout 500 python3 -m dit_sparse.eval.quality --model small --device cuda --dtype bfloat16 --prompts 2 --steps 20 \
    --height 768 --width 1280 --densities '' --no-random --methods '' --variants "{
      \"packed r1\": {$PACKED, \"refresh_every\": 1},
      \"packed r1 cfg\": {$PACKED, \"refresh_every\": 1, \"share_cfg_layouts\": true},
      \"packed r2 cfg\": {$PACKED, \"refresh_every\": 2, \"share_cfg_layouts\": true},
      \"packed r3 cfg\": {$PACKED, \"refresh_every\": 3, \"share_cfg_layouts\": true},
      \"packed r4 cfg\": {$PACKED, \"refresh_every\": 4, \"share_cfg_layouts\": true},
      \"packed r2 cfg top_p 0.8\": {$PACKED, \"refresh_every\": 2, \"share_cfg_layouts\": true, \"top_p\": 0.8},
      \"packed r2 cfg top_p 0.7\": {$PACKED, \"refresh_every\": 2, \"share_cfg_layouts\": true, \"top_p\": 0.7}}" \
    --out $OUT/quality-small-768p-semantic-packed-refresh.json 2>&1 | grep -vE "^ *$|Warning|warn" | tail -12
  ;;
esac
# Part two: a cheaper packed plan (pooled block means read through the cluster order in one Triton pass, the top-p
# kernel writing the pieces' selection as a mask, whole blocks first from the cluster counts). Parts carried as above
# (models out of the tree for the call that carries a part; not needed here).
case "${1:-}" in
plan)
  # The plan by stage at the three shapes, with the gather + scatter-add means as the comparison (same run).
  timeout 240 python3 bench/profile_semantic_plan.py $OUT/profile-semantic-packed-plan-ordered-means.json \
    wan1.3b-480p,wan14b-720p,hunyuan-720p preset 2>&1 | grep -E "^wan|^hun|Error" | cut -c1-700
  ;;
pattern)
  # Planning per sparse call at the presets' schedules (README pattern table).
  for s in wan1.3b-480p wan14b-720p hunyuan-720p; do
    timeout 150 python3 -m dit_sparse.eval.bench pattern --shape $s --presets --qkv photo --methods semantic \
      --out $OUT/pattern-$s-semantic-ordered-means.json 2>&1 | grep -E "semantic|Error" | cut -c1-300
  done
  ;;
steps)
  # HunyuanVideo 720p (15 blocks): the packed preset planned every 2nd / 3rd step against the yardstick.
  timeout 280 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --layers 15 --dense-variants none \
    --methods semantic-packed-r2,semantic-packed-r3,fixed-0.25 \
    --out $OUT/step-hunyuan-720p-semantic-ordered-means.json 2>&1 | grep -E "^hun|Error|wrote" | cut -c1-300
  ;;
esac
# Part three (written at the end of session 20: kmeans_sample's plan, video and step) ran in session 21 as
# `bench/gpu_session21.sh plan|qual|steps`, with one warm k-means iteration beside it.
