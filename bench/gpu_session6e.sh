# Fifth device run of session 6 (after staging .gpu/p1 and finishing .gpu/p2): the step hook now puts the image tokens
# in the tile pattern's order once per transformer call (Flux, Qwen-Image), so the attention calls run the tile layout
# without permuting. Kernel: the tile layout with and without its permutation against a random layout of its density
# (issue #15's >= 0.9x); steps: FLUX and Qwen-Image with the tile pattern (6 blocks, as before).
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
timeout 60 python3 -m dit_sparse.eval.bench kernel --shapes flux-4096,flux-2048 --layout tile --backends fa4 --reps 25 \
  --out $OUT/kernel-tile-flux-in-order.json 2>&1 | grep -E "^flux.*(tile|random)|Error" | cut -c1-220
timeout 80 python3 -m dit_sparse.eval.bench step --model flux-4096 --layers 6 --dense-variants none \
  --methods tile,fixed-0.25 --out $OUT/step-flux-4096-token-order.json 2>&1 | grep -E "^flux|Error" | cut -c1-220
timeout 60 python3 -m dit_sparse.eval.bench step --model flux-2048 --layers 6 --dense-variants none \
  --methods tile,radial --out $OUT/step-flux-2048-token-order.json 2>&1 | grep -E "^flux|Error" | cut -c1-220
timeout 80 python3 -m dit_sparse.eval.bench step --model qwen-image-4096 --layers 6 --dense-variants none \
  --methods tile --out $OUT/step-qwen-image-4096-token-order.json 2>&1 | grep -E "^qwen|Error" | cut -c1-220
