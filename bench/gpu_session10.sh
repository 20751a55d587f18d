# Session 10 (issue #13, end to end): Wan's q/k prologue fused (QK-norm + RoPE in one Triton pass on sparse calls,
# `kernels.qk_norm_rope`), after staging .gpu/p1 and finishing .gpu/p2 (see bench/gpu_session4.sh; move
# dit_sparse/pipelines/{tiny,small}_model out of the tree for the device calls).
#   wan13: the prologue alone (time, difference to Diffusers' arithmetic), Wan-1.3B 480p steps with the stock
#          prologue (DIT_SPARSE_FUSED_PROLOGUE=0) and fused, each against its own dense row, then end to end at the
#          presets (fused).
#   wan14: Wan-14B 720p steps (10 of 40 blocks), stock prologue and fused.
#   v2:    after the first kernel (strided even/odd loads: 0.99 ms for q and k at Wan-1.3B 480p, 13.3 ms at Wan-14B
#          720p, far from the memory bound) was replaced by contiguous loads split in registers: the prologue bench,
#          Wan-1.3B 480p steps fused, Wan-14B 720p steps stock and fused.
#   e2e:   Wan-1.3B 480p end to end at the presets (fused).
#   fastdense: Wan's presets with fast_dense (dense steps on FA4, q/k fused there too): the fa4-full step row, then
#          end to end at the presets.
# Each part's timeouts sum below one device call (600 s).
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
S="python3 -m dit_sparse.eval.bench step --dense-variants none"
case "${1:-wan13}" in
wan13)
  timeout 60 python3 -m dit_sparse.eval.bench prologue --out $OUT/prologue.json 2>&1 | grep -E "^prologue|Error" \
    | cut -c1-600
  rows=radial,fixed-0.25,fixed-0.35,draft-0.35-r4,tile
  DIT_SPARSE_FUSED_PROLOGUE=0 timeout 100 $S --model wan1.3b-480p --methods $rows \
    --out $OUT/step-wan1.3b-480p-stock-prologue.json 2>&1 | grep -E "^wan|Error" | cut -c1-200
  timeout 100 $S --model wan1.3b-480p --methods $rows --out $OUT/step-wan1.3b-480p-fused-prologue.json 2>&1 \
    | grep -E "^wan|Error" | cut -c1-200
  timeout 300 python3 -m dit_sparse.eval.bench e2e --model wan1.3b-480p --methods radial,draft --steps 20 --presets \
    --out $OUT/e2e-wan1.3b-480p-presets-fused-prologue.json 2>&1 | grep -E "^wan|Error" | cut -c1-400
  ;;
wan14)
  rows=radial,fixed-0.25,draft-0.35-r4,tile
  DIT_SPARSE_FUSED_PROLOGUE=0 timeout 120 $S --model wan14b-720p --layers 10 --methods $rows \
    --out $OUT/step-wan14b-720p-stock-prologue.json 2>&1 | grep -E "^wan|Error" | cut -c1-200
  timeout 120 $S --model wan14b-720p --layers 10 --methods $rows --out $OUT/step-wan14b-720p-fused-prologue.json \
    2>&1 | grep -E "^wan|Error" | cut -c1-200
  ;;
v2)
  timeout 60 python3 -m dit_sparse.eval.bench prologue --out $OUT/prologue.json 2>&1 | grep -E "^prologue|Error" \
    | cut -c1-600
  timeout 100 $S --model wan1.3b-480p --methods radial,fixed-0.25,fixed-0.35,draft-0.35-r4,tile \
    --out $OUT/step-wan1.3b-480p-fused-prologue.json 2>&1 | grep -E "^wan|Error" | cut -c1-200
  bash $0 wan14
  ;;
e2e)
  timeout 300 python3 -m dit_sparse.eval.bench e2e --model wan1.3b-480p --methods radial,draft --steps 20 --presets \
    --out $OUT/e2e-wan1.3b-480p-presets-fused-prologue.json 2>&1 | grep -E "^wan|Error" | cut -c1-400
  ;;
fastdense)
  timeout 90 $S --model wan1.3b-480p --dense-variants fa4 --methods radial,draft-0.35-r4 \
    --out $OUT/step-wan1.3b-480p-fa4-full-fused-prologue.json 2>&1 | grep -E "^wan|Error" | cut -c1-200
  timeout 250 python3 -m dit_sparse.eval.bench e2e --model wan1.3b-480p --methods radial,draft --steps 20 --presets \
    --out $OUT/e2e-wan1.3b-480p-presets-fast-dense.json 2>&1 | grep -E "^wan|Error" | cut -c1-400
  ;;
esac
