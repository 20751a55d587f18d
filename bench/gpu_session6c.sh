# Third device run of session 6 (diffusers only: `pip install --target /tmp/site .gpu/dif/*.whl`, small_model in the
# tree): issue #13 item 3, draft's refresh period. Drift on the trained small model says a draft layout planned 4 steps
# earlier is as good as a fresh one (reuse penalty 1.00, drift-small.json); this measures what the video says:
# PSNR/SSIM against dense for draft planned every 1, 2 and 4 sparse steps, at 10 and 20 denoising steps.
export PYTHONPATH=/tmp/site:$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TQDM_DISABLE=1
for steps in 10 20; do
  timeout 250 python3 -m dit_sparse.eval.quality --model small --device cuda --dtype bfloat16 --prompts 1 \
    --steps $steps --densities '' --no-random --methods draft \
    --variants '{"draft r2": {"method": "draft", "refresh_every": 2}, "draft r4": {"method": "draft", "refresh_every": 4}}' \
    --out $OUT/quality-small-draft-refresh-steps$steps.json 2>&1 | grep -v "^Loading" | tail -n 8
done
