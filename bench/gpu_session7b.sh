# Session 7, device runs after bench/gpu_session7.sh (perm-gather, FLUX/Qwen native sizes, Wan semantic/tile rows).
# Issue #15 item 3, the tile pattern on video against radial, with windows that the trained models' heads need
# (every frame, narrow in space: oracle-small-tile.json), not the 3x3x3 cube.
#   step:    after staging .gpu/p1 and finishing .gpu/p2 (gpu_session4.sh): per-step speed on Wan-1.3B 480p and
#            HunyuanVideo 720p (15 blocks), radial vs tile-frames rows vs the fixed 0.25 yardstick.
#   quality: diffusers only, small_model in the tree: PSNR vs dense on the trained small model, 20 steps.
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
case "${1:-step}" in
step)
  timeout 150 python3 -m dit_sparse.eval.bench step --model wan1.3b-480p --dense-variants none \
    --methods radial,tile-frames,tile-frames-3x3,fixed-0.25 --out $OUT/step-wan1.3b-480p-tile.json 2>&1 \
    | grep -E "^wan|Error" | cut -c1-260
  timeout 300 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --layers 15 --dense-variants none \
    --methods radial,tile-frames,tile-frames-3x3,fixed-0.25 --out $OUT/step-hunyuan-720p-tile.json 2>&1 \
    | grep -E "^hunyuan|Error" | cut -c1-260
  ;;
quality)
  export HF_HUB_OFFLINE=1 TQDM_DISABLE=1
  common='"method": "tile", "block_size": 128, "dense_steps": 0.25, "dense_layers": 1, "min_sparse_tokens": 0'
  timeout 400 python3 -m dit_sparse.eval.quality --model small --device cuda --dtype bfloat16 --prompts 1 \
    --steps 20 --densities '' --no-random --methods radial,draft --variants "{
      \"tile 2x8x8 w5x1x3\": {$common, \"tile\": [2, 8, 8], \"window\": [5, 1, 3]},
      \"tile 2x8x8 w5x3x3\": {$common, \"tile\": [2, 8, 8], \"window\": [5, 3, 3]},
      \"tile 1x8x16 w9x1x1\": {$common, \"tile\": [1, 8, 16], \"window\": [9, 1, 1]},
      \"tile 1x3x40 w9x3x1\": {$common, \"tile\": [1, 3, 40], \"window\": [9, 3, 1]},
      \"tile 1x8x16 w3x3x3\": {$common, \"tile\": [1, 8, 16], \"window\": [3, 3, 3]}}" \
    --out $OUT/quality-small-tile.json 2>&1 | grep -v "^Loading" | tail -n 12
  ;;
esac
