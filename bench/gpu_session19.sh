# Session 19 (issue #13; hy, wan14, qual, prof, wan13 ran at 10050c7): where a semantic step's time goes against the yardstick's (GPU time per step by kernel,
# `bench step --profile`), semantic at the yardstick's density, one warm k-means iteration per plan, packed pieces on
# Triton. After staging .gpu/p1 and finishing .gpu/p2 (see bench/gpu_session4.sh; dit_sparse/pipelines/{tiny,small}_model
# out of the tree for the call that carries a part; in the tree for `qual`).
#   hy:    HunyuanVideo 720p step (15 blocks), the preset's packed pieces at top_p 0.3 / 0.2 / 0.15, yardstick, profiled.
#   wan14: Wan-14B 720p step (10 blocks): preset shape, top_p 0.15, warm_iters 1, on Triton, yardstick, profiled.
#   qual:  video on the trained small model at 768x1280: the packed preset with warm_iters 2 (default) against 1.
#   prof:  the packed plan by stage with the variant warm_iters 1, Wan-14B 720p and HunyuanVideo 720p.
#   wan13: Wan-1.3B 480p step: preset shape and top_p 0.15 against the yardstick, profiled.
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
case "${1:-hy}" in
hy)
  timeout 280 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --layers 15 --dense-variants none --profile \
    --methods semantic-packed-r2,semantic-packed-p2-r2-cfg,semantic-packed-p15-r2-cfg,fixed-0.25 \
    --out $OUT/step-hunyuan-720p-semantic-profile.json 2>&1 | grep -E "^hun|Error|wrote" | cut -c1-300
  ;;
wan14)
  timeout 330 python3 -m dit_sparse.eval.bench step --model wan14b-720p --layers 10 --dense-variants none --profile \
    --methods semantic-packed-r2-cfg,semantic-packed-p15-r2-cfg,semantic-packed-w1-r2-cfg,semantic-packed-r2-cfg-triton,fixed-0.25 \
    --out $OUT/step-wan14b-720p-semantic-profile.json 2>&1 | grep -E "^wan|Error|wrote" | cut -c1-300
  ;;
qual)
  timeout 420 python3 -m dit_sparse.eval.quality --model small --device cuda --dtype bfloat16 --prompts 1 --steps 20 \
    --height 768 --width 1280 --densities '' --no-random --methods '' --variants '{"packed": {"method": "semantic", "block_size": 128, "pack_pieces": true, "cluster_order": "similarity"}, "packed warm_iters 1": {"method": "semantic", "block_size": 128, "pack_pieces": true, "cluster_order": "similarity", "warm_iters": 1}}' \
    --out $OUT/quality-small-768p-semantic-warm-iters.json 2>&1 | grep -vE "^ *$|Warning|warn" | tail -8
  ;;
wan13)
  # Ran (10050c7) as this one command line, timeout 200.
  timeout 200 python3 -m dit_sparse.eval.bench step --model wan1.3b-480p --dense-variants none --profile \
    --methods semantic-packed-r2-cfg,semantic-packed-p15-r2-cfg,fixed-0.25 \
    --out $OUT/step-wan1.3b-480p-semantic-profile.json 2>&1 | grep -E "^wan|Error|wrote" | cut -c1-300
  ;;
prof)
  timeout 300 python3 bench/profile_semantic_plan.py $OUT/profile-semantic-packed-warm-iters.json \
    ${2:-wan14b-720p,hunyuan-720p} 2>&1 | grep -E "^wan|^hun|Error" | cut -c1-600
  ;;
esac
# Part two: the per-head permutation as one Triton copy over contiguous rows (`kernels.permute`).
case "${1:-}" in
perm)
  # The copy against torch's gather / scatter_ at HunyuanVideo 720p and Wan-14B 720p sizes (equality asserted).
  timeout 120 python3 bench/perm_gather.py --tokens 119056 --heads 24 --out $OUT/perm-gather-per-head-hunyuan.json 2>&1 | tail -12
  timeout 120 python3 bench/perm_gather.py --tokens 75600 --heads 40 --out $OUT/perm-gather-per-head-wan14b.json 2>&1 | grep per_head
  ;;
permsteps)
  timeout 230 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --layers 15 --dense-variants none --profile \
    --methods semantic-packed-r2,semantic-packed-p15-r2-cfg,fixed-0.25 \
    --out $OUT/step-hunyuan-720p-semantic-triton-permute.json 2>&1 | grep -E "^hun|Error|wrote" | cut -c1-300
  timeout 230 python3 -m dit_sparse.eval.bench step --model wan14b-720p --layers 10 --dense-variants none --profile \
    --methods semantic-packed-r2-cfg,semantic-packed-p15-r2-cfg,fixed-0.25 \
    --out $OUT/step-wan14b-720p-semantic-triton-permute.json 2>&1 | grep -E "^wan|Error|wrote" | cut -c1-300
  ;;
coldwarm)
  # The packed preset's first step in a fresh machine's first process, then in a second process (compilation caches
  # on disk: Inductor's, Triton's, FA4's): is the warm-up paid once per machine?
  for n in 1 2; do
    timeout 200 python3 -m dit_sparse.eval.bench step --model wan1.3b-480p --dense-variants none --reps 1 \
      --methods semantic-packed-r2-cfg --out $OUT/step-wan1.3b-480p-semantic-packed-process$n.json 2>&1 \
      | grep -E "^wan|Error" | cut -c1-200
  done
  ;;
esac
