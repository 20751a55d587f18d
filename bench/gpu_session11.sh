# Session 11 (issue #13): HunyuanVideo's q/k prologue fused (per-head QK-norm + RoPE written into the joint sequence,
# `kernels.qk_norm_rope.head_rms_norm_rope`), and Wan-14B 720p measured end to end. After staging .gpu/p1 and
# finishing .gpu/p2 (see bench/gpu_session4.sh; move dit_sparse/pipelines/{tiny,small}_model out of the tree for the
# device calls).
#   hy:     the prologue bench (Wan and HunyuanVideo shapes), then HunyuanVideo 720p steps (15 of 60 blocks) with the
#           stock prologue (DIT_SPARSE_FUSED_PROLOGUE=0) and fused, each against its own dense row, FA4-dense included.
#   w14:    Wan-14B 720p steps (10 of 40 blocks) with FA4-dense (the fa4-full row with the fused prologue), then
#           FLUX.1-dev 2048^2 and 4096^2 and Qwen-Image 2048^2 steps (6 blocks) with the stock prologue and fused.
#   w14e2e: Wan-14B 720p end to end at the presets (10 of 40 blocks, 20 steps; warm-up loop of 4 steps).
#   hye2e:  HunyuanVideo 720p end to end at draft's preset (fused; 15 of 60 blocks, 10 steps).
# Each part's timeouts sum below one device call (600 s).
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
S="python3 -m dit_sparse.eval.bench step"
E="python3 -m dit_sparse.eval.bench e2e"
case "${1:-hy}" in
hy)
  timeout 90 python3 -m dit_sparse.eval.bench prologue --out $OUT/prologue-hunyuan.json 2>&1 \
    | grep -E "^prologue|Error" | cut -c1-900
  rows=radial,draft-0.1-r2,tile,fixed-0.25,fixed-0.1
  DIT_SPARSE_FUSED_PROLOGUE=0 timeout 220 $S --model hunyuan-720p --layers 15 --dense-variants fa4 --methods $rows \
    --out $OUT/step-hunyuan-720p-stock-prologue.json 2>&1 | grep -E "^hunyuan|Error" | cut -c1-200
  timeout 220 $S --model hunyuan-720p --layers 15 --dense-variants fa4 --methods $rows \
    --out $OUT/step-hunyuan-720p-fused-prologue.json 2>&1 | grep -E "^hunyuan|Error" | cut -c1-200
  ;;
w14)
  timeout 200 $S --model wan14b-720p --layers 10 --dense-variants fa4 --methods radial,fixed-0.25,draft-0.35-r4,tile \
    --out $OUT/step-wan14b-720p-fa4-full-fused-prologue.json 2>&1 | grep -E "^wan|Error" | cut -c1-200
  for m in flux-2048 flux-4096 qwen-image-2048; do
    for p in stock fused; do
      [ $p = stock ] && export DIT_SPARSE_FUSED_PROLOGUE=0 || unset DIT_SPARSE_FUSED_PROLOGUE
      timeout 100 $S --model $m --layers 6 --dense-variants none --methods radial,tile,fixed-0.25 \
        --out $OUT/step-$m-$p-prologue.json 2>&1 | grep -E "^flux|^qwen|Error" | cut -c1-200
    done
  done
  unset DIT_SPARSE_FUSED_PROLOGUE
  ;;
hye2e)
  # Run with draft only and a 3-step warm-up: the last minutes of the session's device time.
  timeout 235 $E --model hunyuan-720p --layers 15 --methods draft --steps 10 --presets --warmup-steps 3 \
    --out $OUT/e2e-hunyuan-720p-presets-fused-prologue.json 2>&1 | grep -E "^hunyuan|Error" | cut -c1-400
  ;;
w14e2e)
  timeout 570 $E --model wan14b-720p --layers 10 --methods radial,draft,tile --steps 20 --presets --warmup-steps 4 \
    --out $OUT/e2e-wan14b-720p-presets.json 2>&1 | grep -E "^wan|Error" | cut -c1-400
  ;;
esac
