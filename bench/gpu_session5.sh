# Ran in session 5 (2026-12-02, commit 0000121): the packed-key kernel lost (packed-kernel-experiment.json) and was
# removed afterwards, so DIT_SPARSE_TRITON_PACKED below no longer changes anything; kept as the record of that run.
# Next device session (after staging .gpu/p1 and finishing .gpu/p2, see gpu_session4.sh): the packed-key kernel for
# semantic's variable blocks (DIT_SPARSE_TRITON_PACKED=1, kernels/triton_packed.py, issue #13 item 1) against the
# block kernel: correctness against the reference on the GPU, kernel time, then one Wan-1.3B step each. With packed
# keys only the query side still pays for partial pieces, so smaller pieces (semantic-b32) may pay off there.
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
# `bash bench/gpu_session5.sh kernel` runs the packed-key part, `... compile` the rest (each fits one 600 s call).
part=${1:-all}
if [ "$part" != compile ]; then
timeout 120 python3 - <<'PY' 2>&1 | grep -v -i warn
import json, os, torch, dit_sparse as ds
from dit_sparse.eval.bench import time_cuda
from dit_sparse.geometry import VideoGeometry
from dit_sparse.kernels import block_sparse_attention as bsa
from dit_sparse.patterns import make_pattern
from dit_sparse.schedule import BoundedCache, PlanCache
g = VideoGeometry(21, 30, 52, "wan"); torch.manual_seed(0)
q, k, v = (torch.randn(1, g.num_tokens, 12, 128, device="cuda", dtype=torch.bfloat16).transpose(1, 2) for _ in range(3))
lay = make_pattern(ds.make_config("semantic", top_p=0.3)).plan(q, k, g, PlanCache(shared=BoundedCache()))
ref = bsa(q.float(), k.float(), v.float(), lay, backend="reference")
row = {"density": float(lay.density())}
for packed in ("0", "1"):
    os.environ["DIT_SPARSE_TRITON_PACKED"] = packed
    out = bsa(q, k, v, lay, backend="triton")
    row[f"ms_packed{packed}"] = time_cuda(lambda: bsa(q, k, v, lay, backend="triton"), reps=7)["median_ms"]
    row[f"max_err_packed{packed}"] = float((out.float() - ref).abs().max())
print(json.dumps(row))
os.makedirs(os.environ["OUT"], exist_ok=True)
json.dump({"commit": os.environ.get("DIT_SPARSE_COMMIT"), "shape": "wan1.3b-480p semantic top_p 0.3", "row": row},
          open(os.path.join(os.environ["OUT"], "packed-kernel.json"), "w"), indent=2)
PY
for packed in 0 1; do
  DIT_SPARSE_TRITON_PACKED=$packed timeout 200 python3 -m dit_sparse.eval.bench step --model wan1.3b-480p \
    --dense-variants none --methods semantic-b64,semantic-b32,fixed-0.25 --out $OUT/step-wan1.3b-480p-packed$packed.json 2>&1 \
    | grep -E "^wan|Error" | cut -c1-300
done
fi
if [ "$part" != kernel ]; then
# Issue #14 item 9, what is left: semantic compiled on the GPU (whole transformer, fullgraph), against eager and dense.
timeout 250 python3 -m dit_sparse.eval.bench compile --model wan1.3b-480p --layers 10 --methods semantic-b64 \
  --route model --out $OUT/compile-wan1.3b-480p-semantic-model.json 2>&1 | grep -E "^wan|Error" | cut -c1-300
# Draft on the image transformers now plans compiled (uniform tilings take the fixed-block plan too): re-measure.
timeout 150 python3 -m dit_sparse.eval.bench step --model flux-4096 --layers 6 --dense-variants none \
  --methods draft,fixed-0.25 --out $OUT/step-flux-4096-draft.json 2>&1 | grep -E "^flux|Error" | cut -c1-300
fi
# In a later call on the same machine, with dit_sparse/pipelines/{tiny,small}_model back in the tree (no carry; the
# wheels stay installed under /tmp/site): layout drift across steps on the trained small model (issue #13 item 3; a
# CPU run did not finish in 22 minutes).
#   source /tmp/site/env.sh; python -m dit_sparse.eval.drift --model small --device cuda --out $OUT/drift-small.json
