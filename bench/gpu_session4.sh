# Next device session, one call after the wheels are staged (see bench/gpu_session3.sh for the staging calls):
#   source .gpu/p2/install.sh finish && DIT_SPARSE_COMMIT=<sha> bash bench/gpu_session4.sh
# The working tree plus one FA4 wheel part must stay under 64 MiB: move dit_sparse/pipelines/{tiny,small}_model out of
# the tree for the staging calls and this one, and put them back before any `git add` (a commit made while they are
# out deletes them).
# 1. Refresh the per-step rows measured before the planning fix and show the disk caches (first_step_s of a second
#    process); 2. the compile benchmark; 3. the image transformers (issue #15), shortened depth.
# Split in parts that fit one device call (600 s): `bash bench/gpu_session4.sh a|b|c`.
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
M=radial,draft,draft-r2,semantic-b64,fixed-0.25
part=${1:-a}
if [ "$part" = a ]; then
for run in first second; do
  timeout 150 python3 -m dit_sparse.eval.bench step --model wan1.3b-480p --dense-variants none --methods $M \
    --out $OUT/step-wan1.3b-480p-$run.json 2>&1 | grep -E "^wan|Error" | cut -c1-300
done
timeout 150 python3 -m dit_sparse.eval.bench step --model wan14b-720p --layers 10 --dense-variants none \
  --methods $M --out $OUT/step-wan14b-720p.json 2>&1 | grep -E "^wan|Error" | cut -c1-300
fi
if [ "$part" = hunyuan ]; then
timeout 200 python3 -m dit_sparse.eval.bench step --model hunyuan-720p --layers 15 --dense-variants none \
  --methods $M --out $OUT/step-hunyuan-720p.json 2>&1 | grep -E "^hunyuan|Error" | cut -c1-300
fi
if [ "$part" = b ]; then
timeout 150 python3 -m dit_sparse.eval.bench compile --model wan1.3b-480p --layers 10 \
  --methods radial,draft,draft-r2 --out $OUT/compile-wan1.3b-480p.json 2>&1 | grep -E "^wan|Error" | cut -c1-300
for m in flux-2048 flux-4096; do
  timeout 150 python3 -m dit_sparse.eval.bench step --model $m --layers 6 --dense-variants none \
    --methods radial,tile,draft,fixed-0.25 --out $OUT/step-$m.json 2>&1 | grep -E "^flux|Error" | cut -c1-300
done
fi
if [ "$part" = c ]; then
# 4. Where sparse starts to pay, per method (issue #14: replaces the borrowed 12,288-token threshold).
timeout 120 python3 -m dit_sparse.eval.bench crossover --methods radial,draft,semantic \
  --out $OUT/crossover-wan-frame.json 2>&1 | grep -E "^crossover|Error" | cut -c1-300
fi
