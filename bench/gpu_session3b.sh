# Session 3, device call 3 (same machine, after gpu_session3.sh; the packaged models in the tree, no carry):
# Wan-14B 720p step benchmark, then fixed vs variable blocks on the trained small model (attention error against the
# oracle, and video PSNR against dense).
#   source /tmp/site/env.sh && DIT_SPARSE_COMMIT=<sha> bash bench/gpu_session3b.sh
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
M=radial,draft,draft-tiles,semantic,semantic-fixed,semantic-fixed-r2,fixed-0.25
timeout 200 python3 -m dit_sparse.eval.bench step --model wan14b-720p --layers 10 --methods $M \
  --out $OUT/step-wan14b-720p.json 2>&1 | grep -E "^wan|wrote|Error" | cut -c1-700
V='{"draft tiles": {"method": "draft", "blocks": "tiles"}, "draft fixed pooled": {"method": "draft", "estimate": "pooled"},
"semantic fixed": {"method": "semantic", "fixed_blocks": true}, "semantic fixed pooled": {"method": "semantic", "fixed_blocks": true, "estimate": "pooled"}}'
timeout 120 python3 -m dit_sparse.eval.oracle --model small --device cuda --variants "$V" \
  --out $OUT/oracle-small-fixed-blocks.json 2>&1 | grep "^|"
timeout 200 python3 -m dit_sparse.eval.quality --model small --device cuda --dtype bfloat16 --prompts 1 --steps 10 \
  --densities "" --variants "$V" --out $OUT/quality-small-fixed-blocks.json 2>&1 | grep -E "^\||PSNR|Error"
