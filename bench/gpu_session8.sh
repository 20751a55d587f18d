# Session 8 (issue #13 item 1): semantic with balanced groups of exactly 128 tokens as blocks (clusters="balanced"),
# so the layout is fixed-block (FlashAttention-4) and computes exactly the selected group pairs.
#   step:    after staging .gpu/p1 and finishing .gpu/p2 (gpu_session4.sh): planning vs attention time at Wan-1.3B
#            480p (bench/profile_semantic.py), one step of Wan-1.3B 480p and HunyuanVideo 720p (15 blocks) with the
#            fixed 0.25 yardstick in the same run.
#   step14b: Wan-14B 720p (10 of 40 blocks).
#   quality: small_model in the tree: balanced against the k-means preset on the trained small model (oracle on
#            captured attention, PSNR vs dense video).
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
B=semantic-balanced,semantic-balanced-r2,semantic-balanced-r4
case "${1:-step}" in
step)
  DIT_SPARSE_COMPILE_PLANNING=0 timeout 100 python3 bench/profile_semantic.py $OUT/profile-semantic-balanced-eager.json \
    balanced 2>&1 | grep -E "^balanced|Error|^ +[a-z]" | head -12 | cut -c1-200
  timeout 150 python3 bench/profile_semantic.py $OUT/profile-semantic-balanced.json balanced 2>&1 \
    | grep -E "^balanced|Error" | cut -c1-300
  timeout 200 python3 -m dit_sparse.eval.bench step --model wan1.3b-480p --dense-variants none \
    --methods fixed-0.25,$B --out $OUT/step-wan1.3b-480p-balanced.json 2>&1 | grep -E "^wan|Error" | cut -c1-200
  timeout 250 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --layers 15 --dense-variants none \
    --methods fixed-0.25,$B --out $OUT/step-hunyuan-720p-balanced.json 2>&1 | grep -E "^hunyuan|Error" | cut -c1-200
  ;;
step14b)
  timeout 400 python3 -m dit_sparse.eval.bench step --model wan14b-720p --layers 10 --dense-variants none \
    --methods fixed-0.25,$B --out $OUT/step-wan14b-720p-balanced.json 2>&1 | grep -E "^wan|Error" | cut -c1-200
  ;;
quality)
  export HF_HUB_OFFLINE=1 TQDM_DISABLE=1
  bal='"method": "semantic", "clusters": "balanced", "block_size": 128'
  timeout 200 python3 -m dit_sparse.eval.oracle --model small --device cuda --layers 2,4 --steps 5,10 \
    --methods semantic,draft --densities 0.25,0.35 --variants "{\"semantic balanced\": {$bal}}" \
    --out $OUT/oracle-small-balanced.json 2>&1 | grep -E "^\||Error" | cut -c1-200
  v="{\"semantic balanced\": {$bal}, \"semantic balanced p0.8\": {$bal, \"top_p\": 0.8},"
  v+="\"semantic balanced p0.95\": {$bal, \"top_p\": 0.95}, \"semantic balanced ds0.1\": {$bal, \"dense_steps\": 0.1}}"
  timeout 350 python3 -m dit_sparse.eval.quality --model small --device cuda --dtype bfloat16 --prompts 2 \
    --steps 20 --densities '' --no-random --methods semantic,draft --variants "$v" \
    --out $OUT/quality-small-balanced.json 2>&1 | grep -v "^Loading" | tail -n 12
  ;;
esac
