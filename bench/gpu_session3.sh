# Session 3, device call 2 (after `bash .gpu/p1/install.sh stage`): checks, then the per-step benchmark (issue #13).
#   source .gpu/p2/install.sh finish && DIT_SPARSE_COMMIT=<sha> bash bench/gpu_session3.sh
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
timeout 100 python3 bench/gpu_check.py 2>&1 | grep -vi warn | cut -c1-300
M=radial,draft,draft-tiles,semantic,semantic-fixed,semantic-fixed-r2,fixed-0.25
timeout 170 python3 -m dit_sparse.eval.bench step --model wan1.3b-480p --methods $M,draft-r2,semantic-r2 \
  --out $OUT/step-wan1.3b-480p.json 2>&1 | grep -E "^wan|wrote|Error" | cut -c1-700
timeout 60 python3 -m dit_sparse.eval.bench pattern --shape wan1.3b-480p --methods radial,draft,semantic \
  --out $OUT/pattern-wan1.3b-480p.json 2>&1 | grep -E "^wan|wrote" | cut -c1-400
timeout 220 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --layers 15 --methods $M \
  --out $OUT/step-hunyuan-720p.json 2>&1 | grep -E "^hunyuan|wrote|Error" | cut -c1-700
