# Written at the end of session 21 (issue #13), for the next session. After staging .gpu/p1 and finishing .gpu/p2.
#   behind:  why semantic's plan costs more behind a sparse attention call than alone at 720p (probe_plan_behind.py:
#            the plan alone, behind the attention, right after it with a sync, after a rest, and its kernels' CUDA
#            time alone and behind the attention).
#   graph:   would a CUDA graph of the warm plan (k-means + packing) make it cheap at Wan-1.3B 480p, where the plan is
#            bound by its launches (probe_plan_graph.py: replay against the same calls launched one by one).
#   static:  (added in session 22) the automatic static width of semantic's index lists against the width read on the
#            host every plan, at Wan-1.3B 480p (step with the GPU's idle time, and the pattern row).
#   plan2:   (session 22) the plan per sparse call after the warm centring and half-precision pooled product.
#   profile: the step at the presets' rows (one warm k-means iteration, r=3) with the GPU time by kernel kind: the
#            planning's share of a real step (k-means assign; the rest above the yardstick's), where the isolated
#            plan timings may not be what a pipeline pays.
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
case "${1:-behind}" in
behind)
  timeout 300 python3 bench/probe_plan_behind.py $OUT/probe-plan-behind.json hunyuan-720p,wan1.3b-480p 2>&1 \
    | grep -E "^hun|^wan|Error" | cut -c1-600
  ;;
graph)
  timeout 300 python3 bench/probe_plan_graph.py $OUT/probe-plan-graph.json wan1.3b-480p,hunyuan-720p 2>&1 \
    | grep -E "^hun|^wan|Error" | cut -c1-600
  ;;
profile)
  timeout 400 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --layers 15 --dense-variants none --profile \
    --methods semantic-packed-w1-r3,fixed-0.25 --out $OUT/step-hunyuan-720p-semantic-w1-profile.json 2>&1 \
    | grep -E "^hun|Error|wrote" | cut -c1-300
  ;;
profile-wan)
  timeout 400 python3 -m dit_sparse.eval.bench step --model wan1.3b-480p --dense-variants none --profile \
    --methods semantic-packed-w1-r3-cfg,fixed-0.25 --out $OUT/step-wan1.3b-480p-semantic-w1-profile.json 2>&1 \
    | grep -E "^wan|Error|wrote" | cut -c1-300
  ;;
static)
  # Session 22, after the first four parts: the automatic static width of semantic's index lists (no host read per
  # plan on small layouts) against the width read every plan ("-trim", as before), in one Wan-1.3B step with the GPU
  # time by kernel (idle GPU = wall less busy), and the plan per sparse call at the preset.
  timeout 300 python3 -m dit_sparse.eval.bench step --model wan1.3b-480p --dense-variants none --profile \
    --methods semantic-packed-w1-r3-cfg,semantic-packed-w1-r3-cfg-trim,fixed-0.25 \
    --out $OUT/step-wan1.3b-480p-semantic-static-width.json 2>&1 | grep -E "^wan|Error|wrote" | cut -c1-300
  timeout 150 python3 -m dit_sparse.eval.bench pattern --shape wan1.3b-480p --presets --qkv photo --methods semantic \
    --out $OUT/pattern-wan1.3b-480p-semantic-static-width.json 2>&1 | grep -E "semantic|Error" | cut -c1-400
  ;;
plan2)
  # Session 22, later: warm k-means centred on its centroids' mean (no pass over q and k for the points' mean) and the
  # pooled block-mass product in bfloat16 on tensor cores; the plan per sparse call at the presets.
  for s in wan1.3b-480p hunyuan-720p wan14b-720p; do
    timeout 150 python3 -m dit_sparse.eval.bench pattern --shape $s --presets --qkv photo --methods semantic \
      --out $OUT/pattern-$s-semantic-plan-trims.json 2>&1 | grep -E "semantic|Error" | cut -c1-400
  done
  ;;
esac
