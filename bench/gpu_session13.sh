# Session 13 (issue #13): planning overhead at the presets' schedules, on photographic q/k (realistic densities), at
# the three target shapes; then HunyuanVideo 720p end to end with the blocks compiled (gpu_session12.sh hyc).
# After staging .gpu/p1 and finishing .gpu/p2 (see bench/gpu_session4.sh; move dit_sparse/pipelines/{tiny,small}_model
# out of the tree for the device calls).
#   pat: `bench pattern --presets --qkv photo` for wan1.3b-480p, wan14b-720p, hunyuan-720p (radial, draft, semantic,
#        tile at each model's preset; planning per sparse call at the preset's refresh period).
#   hyc: HunyuanVideo 720p end to end, blocks compiled (radial, draft, tile presets).
#   kmb: the k-means assignment pass alone (bench/kmeans_micro.py): atomics, concatenation, launch shapes.
#   after: after the k-means changes (q and k read in place, 128-point tiles, sums by sorting): pat again, then kmb.
#   prof: where semantic's planning time goes (bench/profile_semantic_plan.py), Wan-1.3B 480p and Wan-14B 720p.
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
case "${1:-pat}" in
pat)
  for shape in wan1.3b-480p wan14b-720p hunyuan-720p; do
    timeout 300 python3 -m dit_sparse.eval.bench pattern --shape $shape --presets --qkv photo \
      --methods radial,draft,semantic,tile --out $OUT/pattern-$shape-presets.json 2>&1 \
      | grep -E "^(wan|hunyuan)|Error|wrote" | cut -c1-400
  done
  ;;
hyc)
  bash bench/gpu_session12.sh hyc
  ;;
prof)
  timeout 560 python3 bench/profile_semantic_plan.py $OUT/profile-semantic-plan.json wan1.3b-480p,wan14b-720p 2>&1 \
    | grep -vE "^ *$|Warning" | cut -c1-300 | tail -80
  ;;
after)
  bash bench/gpu_session13.sh pat
  bash bench/gpu_session13.sh kmb
  ;;
kmb)
  timeout 500 python3 bench/kmeans_micro.py $OUT/kmeans-micro.json 2>&1 | grep -E "^wan|Error" | cut -c1-400
  ;;
esac
