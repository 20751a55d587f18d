# Next device session (after staging .gpu/p1 and finishing .gpu/p2 as in gpu_session4.sh). `bash bench/gpu_session6.sh
# quick` fits one 600 s call; `memory` is HunyuanVideo at full depth, a call of its own.
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
part=${1:-quick}
if [ "$part" = quick ]; then
  # Issue #15: the tile layout's permutation passes; row gathers of (B, L, H, D) memory vs today's per-head gathers.
  timeout 60 python3 bench/perm_gather.py --out $OUT/perm-gather.json 2>&1 | grep -v -i warn
  # Issue #14: semantic under compile_repeated_blocks now shares one graph set across blocks (route blocks).
  timeout 400 python3 -m dit_sparse.eval.bench compile --model wan1.3b-480p --layers 10 --methods semantic-b64 \
    --out $OUT/compile-wan1.3b-480p-semantic-blocks.json 2>&1 | grep -E "^wan|Error" | cut -c1-300
fi
if [ "$part" = memory ]; then
  # Issue #14 item 3: peak memory of the presets' rows at HunyuanVideo 720p, all 60 blocks (one timed step each).
  timeout 580 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --dense-variants none --warmup 0 --reps 1 \
    --methods radial,draft-r2,semantic-b64 --out $OUT/step-hunyuan-720p-full-depth.json 2>&1 \
    | grep -E "^hunyuan|Error" | cut -c1-300
fi
