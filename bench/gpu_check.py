"""GPU smoke checks run before the benchmarks: every engine against the reference on awkward layouts, and a
torch.compile(fullgraph=True) trace of a Wan block with our processors. Prints one line per check."""

import torch

from dit_sparse import BlockLayout
from dit_sparse.kernels import available_backends, block_sparse_attention


def check_engines():
    torch.manual_seed(0)
    for dtype in (torch.bfloat16, torch.float16):
        for length, block in ((4000, 128), (3001, 64)):
            q, k, v = (torch.randn(2, length, 4, 128, device="cuda", dtype=dtype).transpose(1, 2) for _ in range(3))
            n = -(-length // block)
            mask = torch.rand(2, 4, n, n, device="cuda") < 0.3
            mask[0, 1, 3] = False  # an empty row
            layout = BlockLayout.from_block_mask(mask, block, block, length, length)
            ref, ref_lse = block_sparse_attention(q.float(), k.float(), v.float(), layout, backend="reference",
                                                  return_lse=True)
            for name, status in available_backends("cuda", dtype, 128).items():
                if name == "reference" or status != "ok":
                    print("engine", name, dtype, length, block, "skipped:", status, flush=True)
                    continue
                try:
                    out, lse = block_sparse_attention(q, k, v, layout, backend=name, return_lse=True)
                    err = (out.float() - ref).abs().max().item()
                    fin = torch.isfinite(ref_lse)
                    lerr = (lse[fin] - ref_lse[fin]).abs().max().item()
                    empty_ok = bool((out[0, 1, 3 * block:4 * block] == 0).all()) and bool(
                        torch.isneginf(lse[0, 1, 3 * block:4 * block]).all())
                    print("engine", name, dtype, length, block, f"max_err={err:.2e} lse_err={lerr:.2e}",
                          "empty_row_ok" if empty_ok else "EMPTY_ROW_BAD", "nan" if out.isnan().any() else "",
                          flush=True)
                except Exception as e:
                    print("engine", name, dtype, length, block, "ERROR", repr(e)[:400], flush=True)


def check_patterns():
    """The content-aware layouts at a Wan-480p grid (2 heads) on every engine that runs them, vs the reference."""
    import dit_sparse as ds
    from dit_sparse.geometry import VideoGeometry
    from dit_sparse.patterns import make_pattern

    torch.manual_seed(0)
    geometry = VideoGeometry(21, 30, 52, "wan")
    q, k, v = (torch.randn(1, geometry.num_tokens, 2, 128, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
               for _ in range(3))
    rows = {"draft fixed": ("draft", {}), "draft tiles": ("draft", {"blocks": "tiles"}),
            "semantic variable": ("semantic", {"top_p": 0.3}),
            "semantic fixed": ("semantic", {"top_p": 0.3, "fixed_blocks": True})}
    for label, (method, opts) in rows.items():
        try:
            layout = make_pattern(ds.make_config(method, **opts)).plan(q, k, geometry, {})
            ref = block_sparse_attention(q.float(), k.float(), v.float(), layout, backend="reference")
            for name, status in available_backends("cuda", torch.bfloat16, 128, layout.kind).items():
                if name == "reference" or status != "ok":
                    continue
                out = block_sparse_attention(q, k, v, layout, backend=name)
                print("pattern", label, layout.kind, f"density={float(layout.density()):.3f}", name,
                      f"max_err={(out.float() - ref).abs().max().item():.2e}", flush=True)
        except Exception as e:
            print("pattern", label, "ERROR", repr(e)[:400], flush=True)


def check_compile():
    try:
        from diffusers import WanTransformer3DModel

        import dit_sparse as ds

        torch.manual_seed(0)
        model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=128,
                                      in_channels=16, out_channels=16, text_dim=64, freq_dim=64, ffn_dim=256,
                                      num_layers=2, rope_max_seq_len=256).cuda().to(torch.bfloat16).eval()
        x = torch.randn(1, 16, 9, 32, 48, device="cuda", dtype=torch.bfloat16)
        t = torch.tensor([500.0], device="cuda")
        text = torch.randn(1, 16, 64, device="cuda", dtype=torch.bfloat16)
        ds.apply_sparse_attention(model, ds.RadialConfig(dense_steps=0, dense_layers=0, decay=0.5, backend="triton"))
        with torch.no_grad():
            eager = model(x, t, text, return_dict=False)[0]
            model.compile_repeated_blocks(fullgraph=True)
            compiled = model(x, t, text, return_dict=False)[0]
        print("compile fullgraph ok, max diff", (eager - compiled).abs().max().item(), ds.summary(model)["backend"],
              flush=True)
    except Exception as e:
        print("compile ERROR", repr(e)[:1500], flush=True)


if __name__ == "__main__":
    print(torch.cuda.get_device_name(), torch.__version__)
    check_engines()
    check_patterns()
    check_compile()
