# Fourth device run of session 6 (after staging .gpu/p1 and finishing .gpu/p2): Wan's draft preset now plans every
# 4th sparse step; its step row (4 timed steps: three reuse a layout, one plans) next to every-other-step and radial.
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
timeout 300 python3 -m dit_sparse.eval.bench step --model wan1.3b-480p --dense-variants none --warmup 1 --reps 4 \
  --methods radial,draft-r2,draft-r4,fixed-0.25 --out $OUT/step-wan1.3b-480p-draft-r4.json 2>&1 \
  | grep -E "^wan|Error" | cut -c1-300
