# Probe: where a Wan-1.3B 480p step spends its GPU time (torch profiler kernel table, printed; no JSON, so not a
# speed claim), dense (Diffusers) vs a fixed 0.35 layout on FA4 through our processors. 4 blocks, 1 CFG call.
import sys
import torch
import dit_sparse as ds
from dit_sparse.api import get_state
from dit_sparse.eval import bench as B
from dit_sparse.eval.quality import RandomLayoutPattern

model_name = sys.argv[1] if len(sys.argv) > 1 else "wan1.3b-480p"
spec = dict(B.E2E_MODELS[model_name]); spec["config"] = B._depth(spec, 4)
model = B._build_transformer(spec, "cuda", torch.bfloat16)
calls, tmt = B._step_inputs(spec, "cuda", torch.bfloat16)
name, inputs = calls[0]
def step():
    with torch.no_grad():
        model(timestep=torch.full((1,), 500.0, device="cuda"), return_dict=False, **inputs)
from torch.profiler import profile, ProfilerActivity
for label in ["dense", "fixed-0.35"]:
    if label != "dense":
        cfg = ds.make_config("radial", dense_steps=0, dense_layers=0, min_sparse_tokens=0)
        ds.apply_sparse_attention(model, cfg)
        get_state(model).pattern = RandomLayoutPattern(cfg, 0.35, reuse=True)
    for _ in range(2): step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(2): step()
        torch.cuda.synchronize()
    ev = prof.key_averages()
    tot = sum(e.self_device_time_total for e in ev)
    print(f"=== {label}: total CUDA {tot/2/1e3:.2f} ms per step (4 blocks)")
    for e in sorted(ev, key=lambda e: -e.self_device_time_total)[:22]:
        print(f"{e.self_device_time_total/2/1e3:8.3f} ms {e.count//2:5d}x  {e.key[:110]}")
    if label != "dense":
        ds.remove_sparse_attention(model)
