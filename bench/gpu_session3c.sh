# Session 3, device call after the planning fix (segment means by scatter-add): semantic planning and kernel time,
# then the per-step benchmark again for the content-aware rows (issue #13).
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
timeout 90 python3 bench/profile_semantic.py $OUT/profile-semantic.json 2>&1 | grep -E '^(variable|fixed)|_kernel|cumsum|scatter' | cut -c1-250
timeout 150 python3 -m dit_sparse.eval.bench step --model wan1.3b-480p --dense-variants none \
  --methods semantic,semantic-b64,semantic-b64-r2,draft,draft-r2,fixed-0.25 \
  --out $OUT/step-wan1.3b-480p-after.json 2>&1 | grep -E "^wan|Error" | cut -c1-400
timeout 200 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --layers 15 --dense-variants none \
  --methods fixed-0.25,semantic,semantic-b64,draft-r2 \
  --out $OUT/step-hunyuan-720p-after.json 2>&1 | grep -E "^hunyuan|Error" | cut -c1-400
