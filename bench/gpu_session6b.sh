# Second device run of session 6 (after staging .gpu/p1 and finishing .gpu/p2 as in gpu_session4.sh): the front door's
# shared token orders now gather whole rows of Diffusers' (B, L, H, D) memory and scatter back by gathering with the
# inverse order (bench/results/*_perm-gather.json: 0.25 ms against 0.66 / 0.62 ms per pass at FLUX 4096^2). Issue #15:
# the tile layout's kernel efficiency and the FLUX steps again; issue #13: draft's Wan-1.3B step (draft's order is shared).
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
timeout 150 python3 -m dit_sparse.eval.bench kernel --shapes flux-4096,flux-2048 --layout tile --backends fa4 --reps 5 \
  --out $OUT/kernel-tile-flux-row-gathers.json 2>&1 | grep -E "^flux|Error" | cut -c1-300
timeout 120 python3 -m dit_sparse.eval.bench step --model flux-2048 --layers 6 --dense-variants none \
  --methods radial,tile,draft,fixed-0.25 --out $OUT/step-flux-2048-row-gathers.json 2>&1 | grep -E "^flux|Error" | cut -c1-300
timeout 150 python3 -m dit_sparse.eval.bench step --model flux-4096 --layers 6 --dense-variants none \
  --methods tile,draft,fixed-0.25 --out $OUT/step-flux-4096-row-gathers.json 2>&1 | grep -E "^flux|Error" | cut -c1-300
timeout 150 python3 -m dit_sparse.eval.bench step --model wan1.3b-480p --dense-variants none \
  --methods radial,draft-r2,fixed-0.25 --out $OUT/step-wan1.3b-480p-row-gathers.json 2>&1 | grep -E "^wan|Error" | cut -c1-300
