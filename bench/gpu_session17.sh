# Session 17 (issue #13): packed cluster pieces (pack_pieces=True) as the video presets' semantic layout. After staging
# .gpu/p1 and finishing .gpu/p2 (see bench/gpu_session4.sh; dit_sparse/pipelines/{tiny,small}_model out of the tree
# for the call that carries a part).
#   steps: per denoising step at the preset's shape (packed pieces, planned every other step, both CFG branches on the
#          conditional branch's layout) against the 64-token pieces it replaces on Wan, the fixed 0.25 yardstick in
#          the same run: Wan-14B 720p (10 blocks) and Wan-1.3B 480p (there also pieces packed into 64-token blocks,
#          which cover its ~65-token clusters' selection at 1.25x the pieces' density instead of 1.5x on small's
#          attention, `oracle-small-packed-wan480-clusters.json`).
#   pat:   `bench pattern --presets --qkv photo` (planning per sparse call at the preset's period against the sparse
#          attention it serves, on photographic q/k/v: realistic densities) at the three shapes. Ran (f23260a).
#   prof:  the packed plan by stage (similarity order, packing, k-means, block plan; CUDA time and host wall-clock)
#          against the 64-token pieces, Wan-1.3B 480p (plan 11.4 ms against 2.8 ms for the pieces) and Wan-14B 720p.
# Not run yet (the device was lent for ~11 minutes this session): steps, prof.
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
case "${1:-steps}" in
steps)
  timeout 280 python3 -m dit_sparse.eval.bench step --model wan14b-720p --layers 10 --dense-variants none \
    --methods semantic-packed-r2-cfg,semantic-packed-r2,semantic-b64-r2-cfg,fixed-0.25 \
    --out $OUT/step-wan14b-720p-semantic-packed-preset.json 2>&1 | grep -E "^wan|Error|wrote" | cut -c1-300
  timeout 200 python3 -m dit_sparse.eval.bench step --model wan1.3b-480p --dense-variants none \
    --methods semantic-packed-r2-cfg,semantic-packed-b64,semantic-packed,semantic-b64-r2-cfg,fixed-0.25 \
    --out $OUT/step-wan1.3b-480p-semantic-packed-preset.json 2>&1 | grep -E "^wan|Error|wrote" | cut -c1-300
  ;;
pat)
  for shape in wan14b-720p hunyuan-720p wan1.3b-480p; do
    timeout 170 python3 -m dit_sparse.eval.bench pattern --shape $shape --presets --qkv photo --methods semantic \
      --out $OUT/pattern-$shape-semantic-packed-presets.json 2>&1 | grep -vE "^ *$|Warning|warn" | tail -4 | cut -c1-400
  done
  ;;
prof)
  timeout 560 python3 bench/profile_semantic_plan.py $OUT/profile-semantic-packed-plan.json wan1.3b-480p,wan14b-720p \
    2>&1 | grep -vE "^ *$|Warning" | cut -c1-300 | tail -80
  ;;
esac
