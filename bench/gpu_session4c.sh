# Session 4, third machine (after staging .gpu/p1 and finishing .gpu/p2, see gpu_session4.sh):
# 1. Triton kernel with and without Triton's warp specialisation (issue #13 item 2), Wan-1.3B 480p, fixed layouts;
# 2. FLUX 2048² tile after the shared-permutation index_select (issue #15 target 1.3x).
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
for ws in 0 1; do
  DIT_SPARSE_TRITON_WS=$ws timeout 170 python3 -m dit_sparse.eval.bench kernel --shapes wan1.3b-480p \
    --densities 0.25,0.1 --backends triton --out $OUT/kernel-triton-ws$ws.json 2>&1 | grep -vi warn | tail -6 | cut -c1-300
done
timeout 120 python3 -m dit_sparse.eval.bench step --model flux-2048 --layers 6 --dense-variants none \
  --methods tile,radial,fixed-0.25 --out $OUT/step-flux-2048.json 2>&1 | grep -E "^flux|Error" | cut -c1-300
