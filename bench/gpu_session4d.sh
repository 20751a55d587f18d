# Session 4, fourth machine (after staging .gpu/p1 and finishing .gpu/p2, see gpu_session4.sh): semantic with cluster
# sizes rounded to multiples of the block (SemanticConfig.round_clusters, issue #13 item 1) against the default.
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
timeout 200 python3 -m dit_sparse.eval.bench step --model wan1.3b-480p --dense-variants none \
  --methods semantic-round,semantic-b64,fixed-0.25 --out $OUT/step-wan1.3b-480p.json 2>&1 | grep -E "^wan|Error" | cut -c1-300
timeout 200 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --layers 15 --dense-variants none \
  --methods semantic-round --out $OUT/step-hunyuan-720p.json 2>&1 | grep -E "^hunyuan|Error" | cut -c1-300
