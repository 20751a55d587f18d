# Session 16 (issue #13): semantic as fixed layouts that FlashAttention-4 runs at its full rate. After staging .gpu/p1
# and finishing .gpu/p2 (see bench/gpu_session4.sh); the quality parts need dit_sparse/pipelines/small_model in the
# tree (a warm call).
# Ran in session 16 (their options were then removed again; the commits in each JSON have them):
#   qual (9259871):  k-means clusters resized to whole blocks (clusters="rounded", commit cc3d9d2) on the trained small
#                    model at 768x1280 (34,560 tokens; 256 clusters of ~135 tokens, as Wan-14B 720p's 500 of ~151).
#   step (0f7201d), kern (9259871): their step at Wan-14B / HunyuanVideo 720p, their attention call at Wan-14B.
#   qcover, scover (459013e): SVG2's centroid rule on joint clusters, fixed blocks covering the selection.
#   qcover2, scover2 (65ae3e7): the same with the pooled rule on whole clusters.
#   next (9259871): session 15's unrun part (Wan-1.3B 128/64 pieces; HunyuanVideo's preset at refresh_every=2).
# Not run yet (no device time left):
#   packed:  cluster pieces packed whole into fixed blocks (pack_pieces=True): the attention call at Wan-14B and
#            HunyuanVideo 720p against its own pieces, and the step at Wan-14B (`packedh`: at HunyuanVideo).
#   qpacked: its video quality on small at 768x1280 (as `qual`).
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
case "${1:-packed}" in
qual)
  v='{"b128/64": {"method": "semantic", "block_size": 128, "kv_block_size": 64}, "rounded 128": {"method": "semantic", "clusters": "rounded", "block_size": 128}, "rounded 128/64": {"method": "semantic", "clusters": "rounded", "block_size": 128, "kv_block_size": 64}, "rounded 64": {"method": "semantic", "clusters": "rounded", "block_size": 64}}'
  timeout 400 python3 -m dit_sparse.eval.quality --model small --device cuda --dtype bfloat16 --prompts 1 --steps 20 \
    --height 768 --width 1280 --densities '' --no-random --methods semantic --variants "$v" \
    --out $OUT/quality-small-768p-semantic-rounded.json 2>&1 | grep -vE "^ *$|Warning|warn" | tail -12
  ;;
step)
  timeout 330 python3 -m dit_sparse.eval.bench step --model wan14b-720p --layers 10 --dense-variants none \
    --methods semantic-rounded,semantic-rounded-k64,semantic-b64,fixed-0.25 \
    --out $OUT/step-wan14b-720p-semantic-rounded.json 2>&1 | grep -E "^wan|Error|wrote" | cut -c1-300
  timeout 250 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --layers 15 --dense-variants none \
    --methods semantic-rounded,semantic-b128k64-fa4,fixed-0.25 --out $OUT/step-hunyuan-720p-semantic-rounded.json \
    2>&1 | grep -E "^hunyuan|Error|wrote" | cut -c1-300
  ;;
kern)
  timeout 200 python3 -m dit_sparse.eval.bench kernel --shapes wan14b-720p --layout semantic \
    --semantic-rows semantic-rounded,semantic-b128k64 --clusters 500 --backends fa4 --reps 5 \
    --out $OUT/kernel-semantic-rounded.json 2>&1 | grep -E "^(wan|hun)|Error|wrote" | cut -c1-330
  ;;
qcover)
  # Centroid-rule selection as fixed blocks over a similarity order (a cover of the selection) against the same rule
  # on cluster pieces (its subset) and the preset's pooled 128/64 pieces; 768x1280 as `qual`.
  v='{"b128/64": {"method": "semantic", "block_size": 128, "kv_block_size": 64}, "centroids pieces 128": {"method": "semantic", "estimate": "centroids", "block_size": 128}, "centroids cover sim": {"method": "semantic", "estimate": "centroids", "fixed_blocks": true, "cluster_order": "similarity", "block_size": 128}, "centroids cover label": {"method": "semantic", "estimate": "centroids", "fixed_blocks": true, "block_size": 128}, "centroids cover sim p0.7": {"method": "semantic", "estimate": "centroids", "fixed_blocks": true, "cluster_order": "similarity", "block_size": 128, "top_p": 0.7}}'
  timeout 400 python3 -m dit_sparse.eval.quality --model small --device cuda --dtype bfloat16 --prompts 1 --steps 20 \
    --height 768 --width 1280 --densities '' --no-random --methods semantic --variants "$v" \
    --out $OUT/quality-small-768p-semantic-cover.json 2>&1 | grep -vE "^ *$|Warning|warn" | tail -12
  ;;
scover)
  timeout 200 python3 -m dit_sparse.eval.bench kernel --shapes wan14b-720p --layout semantic \
    --semantic-rows semantic-cover,semantic-cover-p2 --clusters 500 --backends fa4 --reps 5 \
    --out $OUT/kernel-semantic-cover.json 2>&1 | grep -E "^(wan|hun)|Error|wrote" | cut -c1-330
  timeout 330 python3 -m dit_sparse.eval.bench step --model wan14b-720p --layers 10 --dense-variants none \
    --methods semantic-cover,semantic-cover-p2,fixed-0.25 \
    --out $OUT/step-wan14b-720p-semantic-cover.json 2>&1 | grep -E "^wan|Error|wrote" | cut -c1-300
  ;;
qcover2)
  # The cover with the pooled rule on whole clusters (by mass per token, as the pieces' selection) instead of SVG2's.
  v='{"clusters pieces 128": {"method": "semantic", "estimate": "clusters", "block_size": 128}, "clusters cover sim": {"method": "semantic", "estimate": "clusters", "fixed_blocks": true, "cluster_order": "similarity", "block_size": 128}, "clusters cover sim p0.8": {"method": "semantic", "estimate": "clusters", "fixed_blocks": true, "cluster_order": "similarity", "block_size": 128, "top_p": 0.8}}'
  timeout 400 python3 -m dit_sparse.eval.quality --model small --device cuda --dtype bfloat16 --prompts 1 --steps 20 \
    --height 768 --width 1280 --densities '' --no-random --methods semantic --variants "$v" \
    --out $OUT/quality-small-768p-semantic-cover-clusters.json 2>&1 | grep -vE "^ *$|Warning|warn" | tail -12
  ;;
scover2)
  timeout 330 python3 -m dit_sparse.eval.bench step --model wan14b-720p --layers 10 --dense-variants none \
    --methods semantic-cover-clusters,semantic-cover-clusters-r2,fixed-0.25 \
    --out $OUT/step-wan14b-720p-semantic-cover-clusters.json 2>&1 | grep -E "^wan|Error|wrote" | cut -c1-300
  ;;
packed)
  timeout 200 python3 -m dit_sparse.eval.bench kernel --shapes wan14b-720p,hunyuan-720p --layout semantic \
    --semantic-rows semantic,semantic-packed,semantic-b128k64,semantic-packed-k64 --clusters 500 --backends fa4 --reps 5 \
    --out $OUT/kernel-semantic-packed.json 2>&1 | grep -E "^(wan|hun)|Error|wrote" | cut -c1-330
  timeout 330 python3 -m dit_sparse.eval.bench step --model wan14b-720p --layers 10 --dense-variants none \
    --methods semantic-packed,semantic-packed-k64,semantic-packed-p2,semantic-b64,fixed-0.25 \
    --out $OUT/step-wan14b-720p-semantic-packed.json 2>&1 | grep -E "^wan|Error|wrote" | cut -c1-300
  ;;
packedh)
  # HunyuanVideo's half of `packed` (one device call runs at most 600 s).
  timeout 250 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --layers 15 --dense-variants none \
    --methods semantic-packed-k64,semantic-packed-r2,semantic-b128k64-fa4,fixed-0.25 \
    --out $OUT/step-hunyuan-720p-semantic-packed.json 2>&1 | grep -E "^hunyuan|Error|wrote" | cut -c1-300
  ;;
qpacked)
  v='{"b128/64": {"method": "semantic", "block_size": 128, "kv_block_size": 64}, "packed": {"method": "semantic", "block_size": 128, "pack_pieces": true, "cluster_order": "similarity"}, "packed p0.8": {"method": "semantic", "block_size": 128, "pack_pieces": true, "cluster_order": "similarity", "top_p": 0.8}, "packed 128/64": {"method": "semantic", "block_size": 128, "kv_block_size": 64, "pack_pieces": true, "cluster_order": "similarity"}}'
  timeout 400 python3 -m dit_sparse.eval.quality --model small --device cuda --dtype bfloat16 --prompts 1 --steps 20 \
    --height 768 --width 1280 --densities '' --no-random --methods semantic --variants "$v" \
    --out $OUT/quality-small-768p-semantic-packed.json 2>&1 | grep -vE "^ *$|Warning|warn" | tail -12
  ;;
next)
  bash bench/gpu_session15.sh next
  ;;
esac
