# Session 7, third device run: issue #13's end-to-end targets are bounded by the presets' dense fraction (dense steps
# and layers, 0.25-0.32 of the work), not by the sparse steps. Can fewer dense steps at a higher density give the same
# quality, and what does the higher density cost per step?
#   step:    after staging .gpu/p1 and finishing .gpu/p2 (gpu_session4.sh): Wan-1.3B 480p and HunyuanVideo 720p (15
#            blocks), fixed random layouts at 0.25 / 0.35 / 0.5, draft at 0.35 (refresh 4), the video presets' tile
#            (edge tiles packed into full blocks, FA4); Qwen-Image 1328^2's tile with packed blocks.
#   quality: diffusers only, small_model in the tree: draft and radial on the trained small model at fewer dense steps
#            and higher densities, PSNR vs dense video, 20 steps, 2 prompts.
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
case "${1:-step}" in
step)
  timeout 150 python3 -m dit_sparse.eval.bench step --model wan1.3b-480p --dense-variants none \
    --methods fixed-0.25,fixed-0.35,fixed-0.5,draft-r4,draft-0.35-r4,tile --out $OUT/step-wan1.3b-480p-densities.json 2>&1 \
    | grep -E "^wan|Error" | cut -c1-200
  timeout 300 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --layers 15 --dense-variants none \
    --methods fixed-0.25,fixed-0.35,fixed-0.5,tile --out $OUT/step-hunyuan-720p-densities.json 2>&1 \
    | grep -E "^hunyuan|Error" | cut -c1-200
  timeout 100 python3 -m dit_sparse.eval.bench step --model qwen-image-1328 --layers 6 --dense-variants none \
    --methods tile,radial --out $OUT/step-qwen-image-1328-tile-fixed.json 2>&1 | grep -E "^qwen|Error" | cut -c1-200
  ;;
step14b)
  # Wan-14B 720p (10 of 40 blocks): the rows of the moved draft preset (density 0.35) and the video tile preset.
  timeout 400 python3 -m dit_sparse.eval.bench step --model wan14b-720p --layers 10 --dense-variants none \
    --methods fixed-0.25,draft-0.35-r4,tile --out $OUT/step-wan14b-720p-densities.json 2>&1 \
    | grep -E "^wan|Error" | cut -c1-200
  ;;
quality)
  export HF_HUB_OFFLINE=1 TQDM_DISABLE=1
  v='{'
  for ds in 0.1 0.2; do
    for d in 0.25 0.35 0.5; do v+="\"draft d$d ds$ds\": {\"method\": \"draft\", \"density\": $d, \"dense_steps\": $ds},"; done
    v+="\"radial ds$ds\": {\"method\": \"radial\", \"dense_steps\": $ds},"
    v+="\"tile ds$ds\": {\"method\": \"tile\", \"dense_steps\": $ds},"
  done
  v+='"draft d0.35": {"method": "draft", "density": 0.35}, "draft d0.5": {"method": "draft", "density": 0.5}}'
  timeout 500 python3 -m dit_sparse.eval.quality --model small --device cuda --dtype bfloat16 --prompts 2 \
    --steps 20 --densities '' --no-random --methods radial,draft,tile --variants "$v" \
    --out $OUT/quality-small-dense-steps.json 2>&1 | grep -v "^Loading" | tail -n 20
  ;;
esac
