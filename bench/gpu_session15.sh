# Session 15 (issue #13): semantic's cluster pieces on FlashAttention-4 as whole tiles of a padded sequence.
# After staging .gpu/p1 and finishing .gpu/p2 (see bench/gpu_session4.sh; dit_sparse/pipelines/{tiny,small}_model out
# of the tree for the calls that carry a part).
#   check: FA4 on padded tiles against the reference kernel (semantic pieces, masked tail keys, fp16/bf16, compiled).
#   kern:  one attention call at the three shapes: semantic-b64's pieces on Triton and on FA4, and a random layout of
#          the same density on both (the fixed-layout yardstick).
#   fill:  the padded work of semantic's pieces as whole tiles, by cluster count, random and photographic q/k.
#   tiles: 128-token query pieces with 64-token key pieces against 64 / 64, by cluster count (FA4).
#   qualc: those piece shapes and cluster sizes on the trained small model: oracle gain and video PSNR vs dense.
#   qual768: qualc's video PSNR at 768x1280 (34,560 tokens).
#   step:  one denoising step at Wan-14B 720p (10 blocks): semantic-b64 on Triton and FA4, at the preset's schedule
#          (planned every other step, shared by the CFG branches) on FA4, and the fixed 0.25 yardstick.
#   steph: the same at HunyuanVideo 720p (15 of 60 blocks).
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
case "${1:-check}" in
check)
  timeout 200 python3 bench/fa4_padded_check.py --out $OUT/fa4-padded-check.json 2>&1 | grep -vE "^ *$|Warning|warn" \
    | tail -12
  ;;
kern)
  timeout 300 python3 -m dit_sparse.eval.bench kernel --shapes wan1.3b-480p,wan14b-720p,hunyuan-720p \
    --layout semantic --backends triton,fa4 --reps 10 --out $OUT/kernel-semantic-padded-tiles.json 2>&1 \
    | grep -E "^(wan|hun)|Error|wrote" | cut -c1-260
  ;;
step)
  timeout 400 python3 -m dit_sparse.eval.bench step --model wan14b-720p --layers 10 --dense-variants none \
    --methods semantic-b64-triton,semantic-b64-fa4,semantic-b128k64-m256-fa4,semantic-b128k64-m512-fa4,fixed-0.25 \
    --out $OUT/step-wan14b-720p-semantic-fa4.json 2>&1 | grep -E "^wan|Error|wrote" | cut -c1-300
  ;;
steph)
  timeout 300 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --layers 15 --dense-variants none \
    --methods semantic-b64-triton,semantic-b128k64-fa4,semantic-b128k64-m256-fa4,fixed-0.25 \
    --out $OUT/step-hunyuan-720p-semantic-fa4.json 2>&1 \
    | grep -E "^hunyuan|Error|wrote" | cut -c1-300
  ;;
fill)
  # Where semantic's pieces lose time: the padded work of whole 64-token tiles (tile_density) against the selection's
  # density, at the default 500 clusters and fewer, larger ones; random 128- and 64-token blocks as the FA4 rate.
  timeout 300 python3 -m dit_sparse.eval.bench kernel --shapes wan14b-720p,hunyuan-720p --layout semantic \
    --clusters 500,250,125 --backends triton,fa4 --reps 5 --out $OUT/kernel-semantic-fill.json 2>&1 \
    | grep -E "^(wan|hun)|Error|wrote" | cut -c1-330
  timeout 280 python3 -m dit_sparse.eval.bench kernel --shapes wan14b-720p --layout semantic --qkv photo --top-p 0.9 \
    --clusters 500,250,125 --backends fa4 --reps 5 --out $OUT/kernel-semantic-fill-photo.json 2>&1 \
    | grep -E "^(wan|hun)|Error|wrote" | cut -c1-330
  ;;
tiles)
  # Query pieces of 128 tokens with key pieces of 64 (FA4's full-rate tile) against 64 / 64, by cluster count.
  timeout 300 python3 -m dit_sparse.eval.bench kernel --shapes wan14b-720p --layout semantic \
    --semantic-rows semantic-b64,semantic-b128k64 --clusters 500,250,125 --backends fa4 --reps 5 \
    --out $OUT/kernel-semantic-tiles.json 2>&1 | grep -E "^(wan|hun)|Error|wrote" | cut -c1-330
  ;;
qualc)
  # The trained small model (8,640 tokens): piece shapes and cluster sizes against semantic's preset, video PSNR
  # against dense (20 steps, 2 prompts), and the selection's gain between random and the oracle.
  v='{"b64 m256": {"method": "semantic", "min_cluster_tokens": 256}, "b128/64": {"method": "semantic", "block_size": 128, "kv_block_size": 64}, "b128/64 m128": {"method": "semantic", "block_size": 128, "kv_block_size": 64, "min_cluster_tokens": 128}, "b128/64 m256": {"method": "semantic", "block_size": 128, "kv_block_size": 64, "min_cluster_tokens": 256}, "b128/64 m512": {"method": "semantic", "block_size": 128, "kv_block_size": 64, "min_cluster_tokens": 512}}'
  timeout 200 python3 -m dit_sparse.eval.oracle --model small --device cuda --layers 2,4 --steps 5,10 --methods semantic \
    --densities 0.15,0.25 --variants "$v" --out $OUT/oracle-small-semantic-tiles.json 2>&1 | grep -vE "^ *$|Warning|warn" \
    | tail -12
  timeout 380 python3 -m dit_sparse.eval.quality --model small --device cuda --dtype bfloat16 --prompts 2 --steps 20 \
    --densities '' --no-random --methods semantic --variants "$v" --out $OUT/quality-small-semantic-tiles.json 2>&1 \
    | grep -vE "^ *$|Warning|warn" | tail -12
  ;;
qual768)
  # The same at 4x the tokens (768x1280, 34,560): the cluster sizes of Wan-14B 720p are closer (run inline in the
  # session; its JSON's command field is this command).
  v='{"b128/64": {"method": "semantic", "block_size": 128, "kv_block_size": 64}, "b128/64 m256": {"method": "semantic", "block_size": 128, "kv_block_size": 64, "min_cluster_tokens": 256}, "b128/64 m512": {"method": "semantic", "block_size": 128, "kv_block_size": 64, "min_cluster_tokens": 512}}'
  timeout 330 python3 -m dit_sparse.eval.quality --model small --device cuda --dtype bfloat16 --prompts 1 --steps 20 \
    --height 768 --width 1280 --densities '' --no-random --methods semantic --variants "$v" \
    --out $OUT/quality-small-768p-semantic-tiles.json 2>&1 | grep -vE "^ *$|Warning|warn" | tail -12
  ;;
next)
  # Not run (no device time left): Wan-1.3B 480p with 128/64 pieces against its 64-token preset shape, and
  # HunyuanVideo's preset at its refresh period.
  timeout 250 python3 -m dit_sparse.eval.bench step --model wan1.3b-480p --dense-variants none \
    --methods semantic-b64,semantic-b128k64,semantic-b128k64-fa4,fixed-0.25 \
    --out $OUT/step-wan1.3b-480p-semantic-b128k64.json 2>&1 | grep -E "^wan|Error|wrote" | cut -c1-300
  timeout 250 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --layers 15 --dense-variants none \
    --methods semantic-b128k64,semantic-b128k64-r2,fixed-0.25 --out $OUT/step-hunyuan-720p-semantic-b128k64-r2.json \
    2>&1 | grep -E "^hunyuan|Error|wrote" | cut -c1-300
  ;;
esac
