# Next device session (after staging .gpu/p1 and finishing .gpu/p2 as in gpu_session4.sh).
# 1. Issue #13: semantic's per-head token orders go through gather/scatter with an expanded index in every attention
#    call; bench/perm_gather.py now also times index_select of D-rows of the flat (B*L*H, D) memory for them. If it wins,
#    switch _gather_tokens/_scatter_tokens (kernels/__init__.py) for [B|1, H, L] orders and re-run the semantic rows.
# 2. Issue #15: FLUX 2048^2 with the step hook's token order (not run in session 6: the loan ran out).
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
timeout 60 python3 bench/perm_gather.py --tokens 32760 --heads 12 --out $OUT/perm-gather-wan1.3b.json 2>&1 | grep -v -i warn
timeout 120 python3 -m dit_sparse.eval.bench step --model flux-2048 --layers 6 --dense-variants none \
  --methods tile,radial,fixed-0.25 --out $OUT/step-flux-2048-token-order.json 2>&1 | grep -E "^flux|Error" | cut -c1-220
timeout 200 python3 -m dit_sparse.eval.bench step --model wan1.3b-480p --dense-variants none \
  --methods semantic-b64,fixed-0.25 --out $OUT/step-wan1.3b-480p-semantic.json 2>&1 | grep -E "^wan|Error" | cut -c1-220
