# Session 14 (issue #13): semantic's planning with the fused top-p kernel and the preset's refresh_every=2.
# After staging .gpu/p1 and finishing .gpu/p2 (see bench/gpu_session4.sh; move dit_sparse/pipelines/{tiny,small}_model
# out of the tree for the calls that carry a part; `qual` and `cfg` need the small model: run them warm, without carry,
# with the models in the tree).
#   qual: semantic on the trained small model, 20 steps, 2 prompts: planned every 1 / 2 / 4 sparse steps, one warm
#         k-means iteration, against dense video.
#   pat:  `bench pattern --presets --qkv photo` at the three shapes (gpu_session13.sh pat): planning per sparse call at
#         the preset's period, with the new k-means and top-p kernel.
#   prof: semantic's plan by stage, the top-p kernel against the sort (time, agreement), Wan-1.3B and Wan-14B.
#   e2ec: Wan-1.3B 480p end to end, blocks compiled, semantic at its preset (k-means and top-p kernels in the graph).
# step: per denoising step at Wan-14B 720p (10 blocks, random weights, semantic at top_p 0.3 for density ~0.25), the
#       fixed 0.25 yardstick in the same run: semantic with the new planning, planned every step and every other step.
# steph: the same at HunyuanVideo 720p (15 of 60 blocks).
# cfg: share_cfg_layouts on the trained small model (20 steps, 2 prompts, CFG 5): the unconditional branch runs the
#      conditional branch's layout of the step; semantic and draft at small's presets, with and without.
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
case "${1:-qual}" in
qual)
  v='{"semantic r2": {"method": "semantic", "refresh_every": 2}, "semantic r4": {"method": "semantic", "refresh_every": 4}, "semantic warm1": {"method": "semantic", "warm_iters": 1}, "semantic r2 warm1": {"method": "semantic", "refresh_every": 2, "warm_iters": 1}}'
  timeout 400 python3 -m dit_sparse.eval.quality --model small --device cuda --dtype bfloat16 --prompts 2 --steps 20 \
    --densities '' --no-random --methods semantic --variants "$v" --out $OUT/quality-small-semantic-refresh.json 2>&1 \
    | grep -vE "^ *$|Warning|warn" | tail -12
  ;;
pat)
  bash bench/gpu_session13.sh pat
  ;;
prof)
  bash bench/gpu_session13.sh prof
  ;;
e2ec)
  timeout 500 python3 -m dit_sparse.eval.bench e2e --model wan1.3b-480p --methods semantic --steps 10 --presets \
    --compile blocks --warmup-steps 4 --out $OUT/e2e-wan1.3b-480p-presets-compiled-semantic.json 2>&1 \
    | grep -vE "^ *$|Warning|warn" | tail -15
  ;;
step)
  timeout 330 python3 -m dit_sparse.eval.bench step --model wan14b-720p --layers 10 --dense-variants none \
    --methods semantic-b64,semantic-b64-r2,fixed-0.25 --out $OUT/step-wan14b-720p-semantic-plan.json 2>&1 \
    | grep -E "^wan|Error|wrote" | cut -c1-300
  ;;
steph)
  timeout 300 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --layers 15 --dense-variants none \
    --methods semantic-b64,semantic-b64-r2,fixed-0.25 --out $OUT/step-hunyuan-720p-semantic-plan.json 2>&1 \
    | grep -E "^hunyuan|Error|wrote" | cut -c1-300
  ;;
cfg)
  v='{"semantic shared": {"method": "semantic", "share_cfg_layouts": true}, "draft shared": {"method": "draft", "share_cfg_layouts": true}}'
  timeout 400 python3 -m dit_sparse.eval.quality --model small --device cuda --dtype bfloat16 --prompts 2 --steps 20 \
    --densities '' --no-random --methods semantic,draft --variants "$v" --out $OUT/quality-small-share-cfg.json 2>&1 \
    | grep -vE "^ *$|Warning|warn" | tail -12
  ;;
esac
