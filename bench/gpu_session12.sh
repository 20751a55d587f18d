# Session 12 (issue #13): end to end with the transformer blocks compiled (`bench e2e --compile blocks`:
# Diffusers' dense run eager as the yardstick, then dense and each preset compiled, every graph built in the warm-up),
# and HunyuanVideo's radial and tile presets end to end with the fused q/k prologue. After staging .gpu/p1 and
# finishing .gpu/p2 (see bench/gpu_session4.sh; move dit_sparse/pipelines/{tiny,small}_model out of the tree for the
# device calls).
#   c13:  Wan-1.3B 480p, 20 steps, radial / draft / tile presets, compiled (warm-up loop of 8 steps).
#   c14:  Wan-14B 720p (10 of 40 blocks), 10 steps, the same, compiled (warm-up loop of 4 steps).
#   c14d: Wan-14B draft alone, compiled, warm-up loop of 6 steps: draft's 10 % dense steps round to none in 4 warm-up
#         steps, so c14 compiled its dense-step graphs in the timed run (graphs_compiled_in_timed_run 2).
#   hyc:  HunyuanVideo 720p (15 of 60 blocks), 10 steps, radial / draft / tile compiled (not run yet).
#   hy:   HunyuanVideo 720p (15 of 60 blocks), 10 steps, radial and tile presets, eager (fused prologue).
# Each part's timeout stays below one device call (600 s).
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
E="python3 -m dit_sparse.eval.bench e2e"
case "${1:-c13}" in
c13)
  timeout 560 $E --model wan1.3b-480p --methods radial,draft,tile --steps 20 --presets --compile blocks \
    --warmup-steps 8 --out $OUT/e2e-wan1.3b-480p-presets-compiled.json 2>&1 | grep -E "^wan|Error" | cut -c1-500
  ;;
c14)
  timeout 580 $E --model wan14b-720p --layers 10 --methods radial,draft,tile --steps 10 --presets --compile blocks \
    --warmup-steps 4 --out $OUT/e2e-wan14b-720p-presets-compiled.json 2>&1 | grep -E "^wan|Error" | cut -c1-500
  ;;
c14d)
  timeout 580 $E --model wan14b-720p --layers 10 --methods draft --steps 10 --presets --compile blocks \
    --warmup-steps 6 --out $OUT/e2e-wan14b-720p-presets-compiled-draft.json 2>&1 | grep -E "^wan|Error" | cut -c1-500
  ;;
hyc)
  # Next session: HunyuanVideo compiled (bench e2e --model hunyuan-tiny --compile blocks runs on a CPU).
  timeout 580 $E --model hunyuan-720p --layers 15 --methods radial,draft,tile --steps 10 --presets --compile blocks \
    --warmup-steps 4 --out $OUT/e2e-hunyuan-720p-presets-compiled.json 2>&1 | grep -E "^hunyuan|Error" | cut -c1-500
  ;;
hy)
  timeout 560 $E --model hunyuan-720p --layers 15 --methods radial,tile --steps 10 --presets --warmup-steps 3 \
    --out $OUT/e2e-hunyuan-720p-presets-radial-tile.json 2>&1 | grep -E "^hunyuan|Error" | cut -c1-500
  ;;
esac
