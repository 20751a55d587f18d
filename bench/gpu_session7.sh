# Next device session (after staging .gpu/p1 and finishing .gpu/p2 as in gpu_session4.sh).
# 1. Issue #13: semantic's per-head token orders go through gather/scatter with an expanded index in every attention
#    call; bench/perm_gather.py now also times index_select of D-rows of the flat (B*L*H, D) memory for them. If it wins,
#    switch _gather_tokens/_scatter_tokens (kernels/__init__.py) for [B|1, H, L] orders and re-run the semantic rows.
# 3. Issue #15: the tile pattern on video (Wan-1.3B row in the last command; partial tiles, Triton).
# 2. Issue #15: FLUX 2048^2 with the step hook's token order (not run in session 6: the loan ran out), and the native
#    sizes (FLUX 1024^2, Qwen-Image 1328^2), where the image presets run sparse below the automatic dense fallback: if
#    sparse is slower there, drop their min_sparse_tokens=0 (presets.py, test_presets.py) so the fallback applies.
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
timeout 60 python3 bench/perm_gather.py --tokens 32760 --heads 12 --out $OUT/perm-gather-wan1.3b.json 2>&1 | grep -v -i warn
timeout 120 python3 -m dit_sparse.eval.bench step --model flux-2048 --layers 6 --dense-variants none \
  --methods tile,radial,fixed-0.25 --out $OUT/step-flux-2048-token-order.json 2>&1 | grep -E "^flux|Error" | cut -c1-220
for m in flux-1024 qwen-image-1328; do
  timeout 100 python3 -m dit_sparse.eval.bench step --model $m --layers 6 --dense-variants none \
    --methods tile,radial,draft --out $OUT/step-$m.json 2>&1 | grep -E "^(flux|qwen)|Error" | cut -c1-220
done
timeout 200 python3 -m dit_sparse.eval.bench step --model wan1.3b-480p --dense-variants none \
  --methods semantic-b64,tile,fixed-0.25 --out $OUT/step-wan1.3b-480p-semantic-tile.json 2>&1 | grep -E "^wan|Error" | cut -c1-220
