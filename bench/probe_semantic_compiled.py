# Probe: where a compiled semantic step spends its GPU time at Wan-1.3B 480p (torch profiler kernel table, printed; no
# JSON, so not a speed claim). Session 14: compiled, semantic's e2e ran at 0.59x dense (eager plans cost ~9 ms/call).
# 4 blocks, one CFG call per step, semantic at the Wan preset with no dense steps or layers; eager, then compiled.
import sys

import torch
from torch.profiler import ProfilerActivity, profile

import dit_sparse as ds
from dit_sparse.eval import bench as B
from dit_sparse.pipelines.presets import PRESETS

model_name = sys.argv[1] if len(sys.argv) > 1 else "wan1.3b-480p"
spec = dict(B.E2E_MODELS[model_name])
spec["config"] = B._depth(spec, 4)
calls, _ = B._step_inputs(spec, "cuda", torch.bfloat16)
name, inputs = calls[0]
opts = PRESETS["wan2.1-1.3b"].sparse_options("semantic")
opts.update(dense_steps=0, dense_layers=0, min_sparse_tokens=0)
t = [999.0]


def step(model):
    t[0] -= 7.0
    with torch.no_grad():
        model(timestep=torch.full((1,), t[0], device="cuda"), return_dict=False, **inputs)


for mode in ["eager", "compiled"]:
    model = B._build_transformer(spec, "cuda", torch.bfloat16)
    ds.apply_sparse_attention(model, ds.make_config("semantic", **opts))
    if mode == "compiled":
        model.compile_repeated_blocks(fullgraph=True)
    for _ in range(4):
        step(model)
    torch.cuda.synchronize()
    ev_start, ev_end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ev_start.record()
    for _ in range(3):
        step(model)
    ev_end.record()
    torch.cuda.synchronize()
    print(mode, "ms per call (4 blocks):", ev_start.elapsed_time(ev_end) / 3, flush=True)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step(model)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=18, max_name_column_width=70))
    del model
    torch.cuda.empty_cache()
