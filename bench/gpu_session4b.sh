# Session 4, second machine: compiled planning (draft and semantic) against eager, and what it does to a step.
#   part a (after staging .gpu/p1 and finishing .gpu/p2, see gpu_session4.sh): planning profile + Wan-1.3B step
#   part b (same machine): HunyuanVideo step + crossover
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
part=${1:-a}
if [ "$part" = a ]; then
  timeout 280 python3 bench/profile_planning.py $OUT/planning.json 2>&1 | grep -E "^wan|^hunyuan|Error|error" | cut -c1-600
  timeout 250 python3 -m dit_sparse.eval.bench step --model wan1.3b-480p --dense-variants none \
    --methods draft,draft-r2,semantic-b64,fixed-0.25 --out $OUT/step-wan1.3b-480p.json 2>&1 \
    | grep -E "^wan|Error" | cut -c1-300
fi
if [ "$part" = b ]; then
  timeout 280 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --layers 15 --dense-variants none \
    --methods draft-r2,semantic-b64,fixed-0.25 --out $OUT/step-hunyuan-720p.json 2>&1 \
    | grep -E "^hunyuan|Error" | cut -c1-300
  timeout 250 python3 -m dit_sparse.eval.bench crossover --methods radial,draft,semantic-b64 --frames 1,2,3,5,8,13,21 \
    --out $OUT/crossover-wan-frame.json 2>&1 | grep -E "^crossover|Error" | cut -c1-300
fi
