# Session 9 (issue #13 items 1 and 2), after staging .gpu/p1 and finishing .gpu/p2 (see bench/gpu_session4.sh; move
# dit_sparse/pipelines/{tiny,small}_model out of the tree for the device calls).
#   kernels: FA4 and Triton on random layouts of 128-token query blocks and 128 / 64 / 32-token key blocks (what
#            balanced semantic with kv_block_size runs), and the Triton kernel with TMA loads, with and without
#            Triton's warp specialisation (item 2: >= 500 effective TFLOP/s at density 0.25; DIT_SPARSE_TRITON_WS
#            was removed again after this run: it does not compile).
#   quality: the trained small model's video against dense with balanced groups of several sizes (it ruled them
#            out, so their step rows were not measured).
#   e2e:     Wan-1.3B 480p end to end at the presets.
#   hunyuan: HunyuanVideo 720p steps at the draft preset's density.
# Each part's timeouts sum below one device call (600 s).
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
K="python3 -m dit_sparse.eval.bench kernel --shapes wan1.3b-480p --reps 7"
case "${1:-kernels}" in
kernels)
  for kv in 128 64 32; do
    timeout 80 $K --densities 0.25,0.1 --backends fa4,triton --block-kv $kv \
      --out $OUT/kernel-wan1.3b-kv$kv.json 2>&1 | grep -E "^wan|Error" | cut -c1-220
  done
  DIT_SPARSE_TRITON_TMA=1 timeout 80 $K --densities 1.0,0.25,0.1 --backends triton \
    --out $OUT/kernel-triton-tma.json 2>&1 | grep -E "^wan1.3b-480p triton|Error" | cut -c1-220
  DIT_SPARSE_TRITON_TMA=1 DIT_SPARSE_TRITON_WS=1 timeout 80 $K --densities 1.0,0.25,0.1 --backends triton \
    --out $OUT/kernel-triton-tma-ws.json 2>&1 | grep -E "^wan1.3b-480p triton|Error" | cut -c1-220
  ;;
quality)
  # small_model in the tree (a warm call after the staging ones): balanced groups at several query / key grains on
  # the trained small model, against the k-means preset in the same run (10 steps, 1 prompt: as
  # quality-small-balanced-cpu.json, which has the 128 and 128 / 32 groups). Triton runs every layout (exact like
  # FA4: the kernel does not change which blocks are chosen), so that no variant can stop the run on FA4's limits.
  export HF_HUB_OFFLINE=1 TQDM_DISABLE=1 DIT_SPARSE_BACKEND=triton
  bal='"method": "semantic", "clusters": "balanced"'
  v="{\"semantic balanced b64 k32\": {$bal, \"block_size\": 64, \"kv_block_size\": 32},"
  v+="\"semantic balanced b64 k16\": {$bal, \"block_size\": 64, \"kv_block_size\": 16},"
  v+="\"semantic balanced b64\": {$bal, \"block_size\": 64},"
  v+="\"semantic balanced b32\": {$bal, \"block_size\": 32}}"
  timeout 430 python3 -m dit_sparse.eval.quality --model small --device cuda --dtype bfloat16 --prompts 1 \
    --steps 10 --densities '' --no-random --methods semantic --variants "$v" \
    --out $OUT/quality-small-balanced-grain.json 2>&1 | grep -v "^Loading" | tail -n 12
  ;;
e2e)
  # The presets end to end (their whole schedules, 20 steps with CFG): the measured counterpart of the implied rows.
  timeout 420 python3 -m dit_sparse.eval.bench e2e --model wan1.3b-480p --methods radial,draft --steps 20 --presets \
    --out $OUT/e2e-wan1.3b-480p-presets.json 2>&1 | grep -E "^wan|Error" | cut -c1-400
  ;;
hunyuan)
  # HunyuanVideo's draft preset at its own density (0.1, planned every 2nd step): the implied end to end used the
  # 0.25 rows so far. 15 of 60 blocks.
  timeout 300 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --layers 15 --dense-variants none \
    --methods fixed-0.25,fixed-0.1,draft-0.1-r2,draft-r2 --out $OUT/step-hunyuan-720p-draft-0.1.json 2>&1 \
    | grep -E "^hunyuan|Error" | cut -c1-200
  ;;
densefast)
  # How much faster HunyuanVideo's dense step runs with FA4 through our processors (every block listed) than with
  # Diffusers' default (which passes the text mask to SDPA): the presets keep 25-30 % of the steps dense there.
  timeout 240 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --layers 15 --dense-variants cudnn,fa4 \
    --methods fixed-0.25 --out $OUT/step-hunyuan-720p-dense-variants.json 2>&1 | grep -E "^hunyuan|Error" | cut -c1-200
  ;;
hunyuan-e2e)
  # Not run yet (device time): HunyuanVideo 720p end to end at its presets (dense steps on FA4 with fast_dense), 15 of
  # 60 blocks, 10 steps; the measured counterpart of the implied 2.75x / 2.71x.
  timeout 560 python3 -m dit_sparse.eval.bench e2e --model hunyuan-720p --layers 15 --methods draft,tile --steps 10 \
    --presets --out $OUT/e2e-hunyuan-720p-presets.json 2>&1 | grep -E "^hunyuan|Error" | cut -c1-400
  ;;
esac
