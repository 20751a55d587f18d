import json
import subprocess
import sys

import pytest

from dit_sparse.eval import report


def _run_bench(out, *args, timeout=300) -> dict:
    """``python -m dit_sparse.eval.bench ARGS --out OUT`` in a fresh process; its JSON."""
    proc = subprocess.run([sys.executable, "-m", "dit_sparse.eval.bench", *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


def test_bench_e2e_tiny_writes_valid_json(tmp_path):
    out = tmp_path / "e2e.json"
    data = _run_bench(out, "e2e", "--model", "tiny", "--methods", "radial",
                      "--steps", "2", "--dense-steps", "1", "--with-cache")
    assert data["benchmark"] == "e2e" and data["model"] == "tiny"
    assert data["runs"]["dense"]["seconds"] > 0
    radial = data["runs"]["radial"]
    assert "error" not in radial, radial
    assert 0 < radial["mean_density"] <= 1 and radial["sparse_calls"] > 0
    assert "error" not in data["runs"]["cache+sparse"], data["runs"]["cache+sparse"]
    assert data["env"]["device"] == "cpu" and "commit" in data


def test_bench_e2e_presets_run_each_methods_whole_preset(tmp_path):
    """``--presets``: the measured counterpart of the implied end to end runs each method's preset schedule."""
    from dit_sparse.pipelines.presets import WAN_SPARSE

    out = tmp_path / "e2e.json"
    data = _run_bench(out, "e2e", "--model", "tiny", "--methods", "radial", "--steps", "4", "--presets",
                      "--layers", "2")
    radial = data["runs"]["radial"]
    assert data["layers_built"] == 2
    assert "error" not in radial, radial
    assert data["presets"] is True and radial["config"]["dense_steps"] == WAN_SPARSE["radial"]["dense_steps"]
    assert radial["config"]["decay"] == WAN_SPARSE["radial"]["decay"]
    # 0.25 of 4 steps dense, with its dense layer in the sparse ones.
    assert radial["dense_calls"] > 0 and radial["sparse_calls"] > 0


def test_bench_e2e_short_warmup_leaves_the_timed_run_on_its_own_schedule(tmp_path):
    """``--warmup-steps``: a shorter warm-up loop (its schedule scaled to it) must not shift the timed run's schedule:
    the timed run counts the same dense and sparse calls as a run without warm-up, and the same latents."""
    runs = {}
    for name, extra in (("none", ["--warmup", "0"]), ("short", ["--warmup-steps", "2"])):
        out = tmp_path / f"{name}.json"
        data = _run_bench(out, "e2e", "--model", "tiny", "--methods", "draft", "--steps", "8", "--presets",
                          "--layers", "2", *extra)
        assert "error" not in data["runs"]["draft"], data["runs"]["draft"]
        runs[name] = data
    assert runs["short"]["warmup_steps"] == 2 and runs["none"]["warmup_steps"] == 0
    a, b = runs["none"]["runs"]["draft"], runs["short"]["runs"]["draft"]
    assert (a["dense_calls"], a["sparse_calls"]) == (b["dense_calls"], b["sparse_calls"])
    assert a["dense_calls"] > 0 and a["sparse_calls"] > 0
    assert a["psnr_latents_vs_dense"] == b["psnr_latents_vs_dense"]


def test_bench_e2e_compiled_runs_every_row_compiled_and_compiles_nothing_in_the_timed_run(tmp_path):
    """``--compile blocks``: Diffusers' dense run stays eager (the yardstick), dense and each method run with the
    blocks compiled, all graphs are built in the warm-up (a graph compiled in the timed run would time the compiler),
    and a compiled method computes what it computes eager."""
    runs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile", "blocks", "--compile-backend", "aot_eager"])):
        out = tmp_path / f"{name}.json"
        # 2 warm-up steps hold no dense step of radial's 0.25 (the timed 4 have one): lengthened to 3.
        runs[name] = _run_bench(out, "e2e", "--model", "tiny", "--methods", "radial", "--steps", "4", "--presets",
                                "--layers", "2", "--warmup-steps", "2", *extra)
    compiled = runs["compiled"]
    assert compiled["compile"].startswith("compile_repeated_blocks(fullgraph=True")
    assert list(compiled["runs"]) == ["dense", "dense-compiled", "radial"]
    assert "compiled" not in compiled["runs"]["dense"] and runs["eager"]["compile"] is None
    for label in ("dense-compiled", "radial"):
        e = compiled["runs"][label]
        assert "error" not in e, e
        assert e["compiled"] and e["graphs"] > 0 and e["graph_breaks"] == 0
        assert e["graphs_compiled_in_timed_run"] == 0, e
    radial = compiled["runs"]["radial"]
    assert radial["warmup_steps"] == 3 and compiled["warmup_steps"] == 2
    # Dense steps, the dense layer of sparse steps, a sparse call that builds radial's shared layout and one that
    # reads it: 4 graphs. A memo read inside the graph (whether FA4 runs dense calls) made it 5, the first one used
    # for one call only.
    assert radial["graphs"] == 4
    assert radial["psnr_latents_vs_dense"] == runs["eager"]["runs"]["radial"]["psnr_latents_vs_dense"]
    assert radial["speedup_vs_dense_compiled"] > 0
    # The README keeps the compiled run next to the eager one of the same model.
    table = report.e2e_table([runs["eager"], compiled])
    assert "**tiny** on" in table and "**tiny**, compiled on" in table and "| dense-compiled |" in table


def test_bench_e2e_compiled_hunyuan_video_tiny(tmp_path):
    """The same for HunyuanVideo (dual- and single-stream blocks, the token refiner, no CFG pass): every graph in the
    warm-up, none broken, at draft's preset (dense steps, a dense layer, a layout reused every other step)."""
    data = _run_bench(tmp_path / "e2e.json", "e2e", "--model", "hunyuan-tiny", "--methods", "draft", "--steps", "4",
                      "--presets", "--warmup-steps", "2", "--compile", "blocks", "--compile-backend", "aot_eager")
    assert data["cfg"] is False and list(data["runs"]) == ["dense", "dense-compiled", "draft"]
    for label in ("dense-compiled", "draft"):
        e = data["runs"][label]
        assert "error" not in e, e
        assert e["graphs"] > 0 and e["graph_breaks"] == 0 and e["graphs_compiled_in_timed_run"] == 0, e


def test_warmup_steps_like_holds_every_kind_of_step_of_the_timed_run():
    import dit_sparse as ds
    from dit_sparse.eval.bench import warmup_steps_like

    draft = ds.make_config("draft", dense_steps=0.1, density=0.35)
    assert warmup_steps_like(draft, 4, 10) == 6  # round(0.1 * 4) = 0 dense steps; 6 is the first with one
    assert warmup_steps_like(draft, 8, 20) == 8
    radial = ds.make_config("radial", dense_steps=0.25)
    assert warmup_steps_like(radial, 2, 4) == 3
    # A timed run with no dense step needs none in its warm-up; never longer than the timed run.
    assert warmup_steps_like(ds.make_config("radial", dense_steps=0), 1, 4) == 1
    # An int of dense steps fills a short warm-up: 2 of 2 dense, so the timed run's sparse steps need a third.
    assert warmup_steps_like(ds.make_config("radial", dense_steps=2), 2, 4) == 3


def test_e2e_tables_keep_the_newest_run_of_every_method():
    """A rerun of one method does not hide an older run of the others; a run whose methods were all measured again
    drops out, and so do runs off the presets' schedules where preset runs exist."""
    def run(date, methods, presets=True, compile=None):
        return {"benchmark": "e2e", "model": "m", "date": date, "presets": presets, "compile": compile,
                "runs": {"dense": {"seconds": 2.0}, **{x: {"seconds": 1.0, "speedup": 2.0} for x in methods}}}

    old_all = run("2026-01-01", ["radial", "draft", "tile"])
    not_presets = run("2026-01-02", ["semantic"], presets=False)
    full = run("2026-01-03", ["radial", "draft", "tile"])
    draft_again = run("2026-01-04", ["draft"])
    compiled = run("2026-01-05", ["radial"], compile="c")
    chosen = report._e2e_runs([old_all, not_presets, full, draft_again, compiled])
    assert [r["date"] for r in chosen] == ["2026-01-03", "2026-01-04", "2026-01-05"]


def test_bench_kernel_tiny_checks_against_reference(tmp_path):
    out = tmp_path / "k.json"
    data = _run_bench(out, "kernel", "--shapes", "tiny", "--backends", "reference",
                      "--densities", "1.0,0.25", "--reps", "1")
    rows = data["results"]["tiny"]["sparse"]["reference"]
    assert rows["0.25"]["ok"] and abs(rows["0.25"]["density"] - 0.25) < 0.1


def test_bench_kernel_tile_layout_and_its_yardstick(tmp_path):
    """`--layout tile`: the image presets' tile pattern on the shape's grid and a random layout of its density, both
    checked against the whole reference kernel (the tile layout carries token permutations, which the sampled check
    of fixed blocks does not apply): a wrong output is caught."""
    import torch

    from dit_sparse.eval import bench
    from dit_sparse.kernels import block_sparse_attention

    args = bench.build_parser().parse_args(["kernel", "--shapes", "tiny", "--backends", "reference", "--layout",
                                            "tile", "--reps", "1", "--out", str(tmp_path / "k.json")])
    data = bench.bench_kernel(args)
    rows = data["results"]["tiny"]["sparse"]["reference"]
    assert list(rows)[0] == "tile" and rows["tile"]["ok"] and 0 < rows["tile"]["density"] < 1
    # The same blocks without the permutation (tokens already in tile order), then the yardstick.
    assert list(rows)[1] == "tile-in-order" and rows["tile-in-order"]["ok"]
    assert rows["tile-in-order"]["density"] == rows["tile"]["density"]
    assert list(rows)[2].startswith("random-") and rows[list(rows)[2]]["ok"]
    assert "| tiny | reference | tile-in-order " in report.kernel_table([data], kind="kernel-tile")
    q, k, v = (torch.randn(1, 2, 1000, 64) for _ in range(3))
    (_, tile), (_, in_order), _ = bench._kernel_layouts(args, "tiny", q, k, [], 2, 1000, "cpu")
    assert in_order.q_perm is None and in_order.kv_perm is None
    assert tile.q_perm is not None or tile.q_block_starts is not None  # not what the sampled check handles
    right = block_sparse_attention(q, k, v, tile, backend="reference")
    assert bench.sampled_reference_error(q, k, v, tile, right) < 1e-5
    assert bench.sampled_reference_error(q, k, v, tile, right.flip(2)) > 0.1


def test_bench_kernel_semantic_layout_records_its_tile_work(tmp_path):
    """`--layout semantic`: a plan per (row, cluster count) and random yardsticks of the first one's density, each
    checked against the reference; the piece rows say what whole tiles cost them (tile_density >= density)."""
    from dit_sparse.eval import bench

    args = bench.build_parser().parse_args(["kernel", "--shapes", "tiny", "--backends", "reference", "--layout",
                                            "semantic", "--semantic-rows", "semantic-b64,semantic-b128k64",
                                            "--clusters", "40,10", "--reps", "1", "--out", str(tmp_path / "k.json")])
    data = bench.bench_kernel(args)
    rows = data["results"]["tiny"]["sparse"]["reference"]
    assert data["benchmark"] == "kernel-semantic"
    assert list(rows)[:4] == ["semantic-b64-k40", "semantic-b64-k10", "semantic-b128k64-k40", "semantic-b128k64-k10"]
    for label in list(rows)[:4]:
        row = rows[label]
        assert row["ok"] and row["tile_density"] >= row["density"] > 0 and 0 < row["key_piece_fill"] <= 1
    # Larger clusters fill the tiles better.
    assert rows["semantic-b64-k10"]["key_piece_fill"] > rows["semantic-b64-k40"]["key_piece_fill"]
    assert [label.split("-")[0] for label in list(rows)[4:]] == ["random", "random64"]


def test_semantic_whole_tiles_section_names_the_options_each_row_ran(tmp_path):
    def row(psnr, **cfg):
        return {"psnr": psnr, "ssim": 0.9, "density": 0.5,
                "config": {"clusters": "joint", "block_size": 128, "top_p": 0.9, **cfg}}

    first, *_, last = report.SEMANTIC_WHOLE_TILE_RUNS
    (tmp_path / first).write_text(json.dumps({"results": {"dense": {"seconds": 1.0}, "semantic": row(32.6),
                                                          "rounded": row(24.4, clusters="rounded")}}))
    packed = dict(pack_pieces=True, cluster_order="similarity")
    (tmp_path / last).write_text(json.dumps({"results": {
        "packed": row(33.0, **packed), "kept": row(33.1, keep_cluster_order=True, **packed),
        "every": row(33.2, keep_cluster_order=False, **packed)}}))
    table = report.semantic_whole_tiles_section(str(tmp_path))
    assert f"| `{first}` | preset | block_size=128 | 0.50 | 32.60 dB | 0.900 |" in table
    assert f"| `{first}` | rounded | clusters='rounded', block_size=128 | 0.50 | 24.40 dB | 0.900 |" in table
    # A packed run from before keep_cluster_order recomputed the order in every plan: the row says so.
    assert (f"| `{last}` | packed | cluster_order='similarity', pack_pieces=True, block_size=128 (similarity order "
            f"in every plan) |") in table
    assert f"| `{last}` | kept | cluster_order='similarity', pack_pieces=True, block_size=128 |" in table
    assert (f"| `{last}` | every | cluster_order='similarity', keep_cluster_order=False, pack_pieces=True, "
            f"block_size=128 |") in table
    assert "| dense |" not in table
    assert report.semantic_whole_tiles_section(str(tmp_path / "none")).startswith("_no whole-tile")


def test_semantic_pieces_section_reads_what_each_row_ran(tmp_path):
    def run(rows, height):
        return {"prompts": ["a"], "settings": {"height": height, "width": height * 5 // 3, "frames": 33, "steps": 20},
                "results": {"dense": {"seconds": 1.0}, **rows}}

    def row(psnr, **cfg):
        return {"psnr": psnr, "density": 0.5, "config": {"block_size": 128, "kv_clusters": 256, **cfg}}

    small, large = report.SEMANTIC_PIECE_RUNS
    (tmp_path / small).write_text(json.dumps(run({"semantic": row(30.9), "m256": row(24.6, kv_block_size=64,
                                                                                     min_cluster_tokens=256)}, 384)))
    (tmp_path / large).write_text(json.dumps(run({"semantic": row(32.6)}, 768)))
    table = report.semantic_pieces_section(str(tmp_path))
    assert "8,640 tokens" in table and "34,560 tokens" in table
    assert "| preset | <= 128 / <= 128, 256 clusters | 30.90 dB (0.50) | 32.60 dB (0.50) |" in table
    assert "| m256 | <= 128 / <= 64, at most 256 clusters of >= 256 tokens on average | 24.60 dB (0.50) | — |" in table
    assert report.semantic_pieces_section(str(tmp_path / "none")).startswith("_no semantic")


SAMPLE_KERNEL = {
    "benchmark": "kernel", "commit": "abc", "block_size": 128, "command": "python -m dit_sparse.eval.bench kernel",
    "env": {"device": "NVIDIA H100"},
    "results": {"wan1.3b-480p": {
        "tokens": 32760, "heads": 12, "head_dim": 128,
        "dense": {"cudnn_sdpa": {"median_ms": 10.8, "tflops": 610.0}},
        "sparse": {"triton": {"0.25": {"median_ms": 3.0, "density": 0.25, "effective_tflops": 550.0,
                                       "max_abs_err_vs_reference": 0.004},
                              # A newer run's row: the kernels' own time and the queued calls' rate as well.
                              "0.1": {"median_ms": 2.0, "density": 0.1, "effective_tflops": 330.0,
                                      "kernel_ms": 1.46, "effective_kernel_tflops": 452.0,
                                      "effective_queued_tflops": 445.0, "max_abs_err_vs_reference": 0.004}},
                   "fa4": {"unavailable": "not installed"}},
    }},
}
SAMPLE_E2E = {
    "benchmark": "e2e", "model": "wan1.3b-480p", "steps": 10, "dense_steps": 2, "dense_layers": 1, "cfg": True,
    "attention_share": 0.56, "commit": "abc", "env": {"device": "NVIDIA H100"},
    "runs": {"dense": {"seconds": 12.0}, "radial": {"seconds": 8.0, "speedup": 1.5, "amdahl_bound": 2.0,
                                                    "amdahl_at_density": 1.6, "mean_density": 0.3,
                                                    "backend": "triton", "psnr_latents_vs_dense": 30.0}},
}


def test_report_renders_tables_plots_and_readme(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    (res / "2026-01-01_h100_kernel.json").write_text(json.dumps(SAMPLE_KERNEL))
    (res / "2026-01-01_h100_e2e.json").write_text(json.dumps(SAMPLE_E2E))
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- BEGIN:kernel -->\nold\n<!-- END:kernel -->\ntail\n")
    docs = tmp_path / "docs"
    report.update_readme(str(readme), str(res), str(docs))
    text = readme.read_text()
    assert "old" not in text and "tail" in text
    assert "| wan1.3b-480p | triton | 0.25 | 3.00 | 550 | — | — | — | 0.28 | 4.0e-03 |" in text
    assert "| wan1.3b-480p | triton | 0.10 | 2.00 | 330 | 1.46 | 452 | 445 | 0.19 | 4.0e-03 |" in text
    assert "| radial | 8.00 | 1.50 | 2.00 | 1.60 | 0.30 | triton | 30.0 |" in text
    assert (docs / "kernel_speed.png").stat().st_size > 1000
    assert (docs / "e2e_speedup.png").stat().st_size > 1000


def test_plot_layout(tmp_path):
    from dit_sparse import BlockLayout

    layout = BlockLayout.dense(1, 2, 300, 300, 64, 64)
    fig = report.plot_layout(layout, head=1, path=str(tmp_path / "l.png"))
    assert fig is not None and (tmp_path / "l.png").exists()


def test_bench_layer_tiny(tmp_path):
    out = tmp_path / "layer.json"
    data = _run_bench(out, "layer", "--shape", "tiny", "--methods", "radial",
                      "--reps", "1")
    assert data["results"]["dense_sdpa"]["ms"] > 0
    assert 0 < data["results"]["radial"]["density"] < 1


def _oracle_summary_row(method, setting, gain):
    return dict(method=method, setting=setting, captures=3, density=0.25, rel_l2=0.2, mass_kept=0.8,
                oracle_rel_l2=0.1, oracle_mass_kept=0.9, random_rel_l2=0.4, random_mass_kept=0.3, gain=gain,
                gain_of_means=gain)


SAMPLE_QUALITY = {
    "benchmark": "quality-tiny", "command": "python -m dit_sparse.eval.quality --model tiny",
    "commit": "0123456789abc", "device": "cpu",
    "settings": {"model": "tiny", "height": 256, "width": 256, "frames": 17, "steps": 10, "device": "cpu"},
    "prompts": ["a", "b", "c"],
    "results": {
        "dense": {"seconds": 10.0},
        "radial": {"psnr": 25.0, "ssim": 0.9, "density": 0.64, "seconds": 5.0, "config": {}},
        "draft": {"psnr": 20.0, "ssim": 0.8, "density": 0.3, "seconds": 5.0, "config": {}},
        "radial@0.25": {"psnr": 22.0, "ssim": 0.85, "density": 0.26, "seconds": 5.0, "config": {},
                        "target_density": 0.25, "knob": {"decay": 0.5}},
        "random@0.25": {"psnr": 15.0, "ssim": 0.5, "density": 0.25, "seconds": 5.0, "config": {},
                        "target_density": 0.25},
    },
}
SAMPLE_ORACLE = {
    "benchmark": "oracle-fidelity", "model": "tiny", "commit": "fedcba9876543", "command":
    "python -m dit_sparse.eval.oracle --model tiny",
    "settings": {"height": 256, "width": 256, "frames": 17, "num_inference_steps": 10, "layers": [1, 3],
                 "steps": [2, 5], "tokens": 1280, "block_size": 32, "device": "cpu"},
    # draft has no preset row here: its quality row gets "—".
    "summary": [_oracle_summary_row("radial", "preset", 0.61), _oracle_summary_row("radial", "d=0.25", 1.12),
                _oracle_summary_row("draft", "d=0.25", 0.4)],
    "rows": [],
}


def test_trained_quality_section_merges_oracle_gains(tmp_path):
    (tmp_path / "quality-tiny.json").write_text(json.dumps(SAMPLE_QUALITY))
    (tmp_path / "oracle-tiny.json").write_text(json.dumps(SAMPLE_ORACLE))
    text = report.trained_quality_section(str(tmp_path))
    assert "### tiny: 17×256×256, 1,280 tokens, 10 steps" in text
    assert "device cpu, 3 prompts, commit `0123456789`; `python -m dit_sparse.eval.quality --model tiny`" in text
    assert "| gain vs oracle (captured attention) |" in text
    # preset <-> "preset", matched density <-> "d=<density>", no oracle row -> "—"; random rows are not method rows.
    assert "| radial | preset | 0.640 | 25.00 | 0.900 | 15.00 / 0.500 (at 0.250) | 0.61 |" in text
    assert "| radial | density 0.25 (decay=0.5) | 0.260 | 22.00 | 0.850 | 15.00 / 0.500 (at 0.250) | 1.12 |" in text
    assert "| draft | preset | 0.300 | 20.00 | 0.800 | 15.00 / 0.500 (at 0.250) | — |" in text
    # The oracle's own summary table and the sentence that explains the gain.
    assert "| radial | d=0.25 | 0.250 | 0.200 | 0.100 | 0.400 | 0.800 | 0.900 | 0.300 | 1.12 |" in text
    assert "0 = no better than random, 1 = as good as the oracle" in text
    assert "dense run (17×256×256, 1,280 tokens, 10 steps; layers [1, 3], steps [2, 5], block 32)" in text
    assert "commit `fedcba9876`; `python -m dit_sparse.eval.oracle --model tiny`" in text
    # small has neither JSON: its heading comes from the preset, and each missing file names its command.
    assert "### small: 33×384×640, 8,640 tokens, 20 steps" in text
    assert "`python -m dit_sparse.eval.quality --model small --device cuda` writes" in text
    assert "`python -m dit_sparse.eval.oracle --model small --device cuda` writes" in text


def test_trained_quality_section_without_oracle_or_any_json(tmp_path):
    (tmp_path / "quality-tiny.json").write_text(json.dumps(SAMPLE_QUALITY))
    text = report.trained_quality_section(str(tmp_path))
    assert "| radial | preset | 0.640 | 25.00 | 0.900 | 15.00 / 0.500 (at 0.250) | — |" in text
    oracle_hint = (f"_no oracle results for `tiny` yet: `python -m dit_sparse.eval.oracle --model tiny` writes "
                   f"`{tmp_path / 'oracle-tiny.json'}`_")
    assert oracle_hint in text

    empty = tmp_path / "empty"
    empty.mkdir()
    text = report.trained_quality_section(str(empty))
    for kind in ("quality", "oracle"):
        for model in ("tiny", "small"):
            assert f"_no {kind} results for `{model}` yet: `python -m dit_sparse.eval.{kind} --model {model}" in text
            assert f"`{empty / f'{kind}-{model}.json'}`_" in text
    assert "| method |" not in text


def test_update_readme_writes_trained_quality_between_markers(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    (res / "quality-tiny.json").write_text(json.dumps(SAMPLE_QUALITY))
    (res / "oracle-tiny.json").write_text(json.dumps(SAMPLE_ORACLE))
    readme = tmp_path / "README.md"
    readme.write_text("# x\n## Quality on the trained models\n\n<!-- BEGIN:quality -->\nold\n<!-- END:quality -->\n"
                      "tail\n")
    report.main(["--results", str(res), "--readme", str(readme), "--docs", str(tmp_path / "docs")])
    text = readme.read_text()
    head, rest = text.split("<!-- BEGIN:quality -->", 1)
    body, tail = rest.split("<!-- END:quality -->", 1)
    assert "old" not in body and "tail" in tail and head.endswith("## Quality on the trained models\n\n")
    assert "### tiny:" in body and "### small:" in body and "| 1.12 |" in body


def test_bench_step_tiny_writes_ratios_and_the_presets_end_to_end(tmp_path):
    out = tmp_path / "step.json"
    data = _run_bench(out, "step", "--model", "tiny", "--methods", "radial,draft-r2",
                      "--dense-variants", "none", "--reps", "1", "--profile")
    assert data["benchmark"] == "step" and data["layers_timed"] == data["layers_full_model"] == 2
    rows = data["results"]
    assert rows["dense"]["step_s"] > 0
    for label in ("radial", "draft-r2"):
        assert "error" not in rows[label], rows[label]
        assert rows[label]["ratio_vs_dense"] > 0 and 0 < rows[label]["mean_density"] <= 1
    assert rows["draft-r2"]["config"]["refresh_every"] == 2
    # --profile: time by kernel (by operator on a CPU) over one refresh cycle, after the timing.
    for label, steps in (("dense", 1), ("radial", 1), ("draft-r2", 2)):
        prof = rows[label]["gpu_kernels"]
        assert prof["steps"] == steps and prof["kernels"], prof
        assert 0 < sum(k["ms"] for k in prof["kernels"]) <= prof["busy_ms"] + 1e-6
    implied = data["e2e_implied"]["radial"]
    f, r = implied["dense_fraction"], implied["per_step_ratio"]
    assert abs(implied["e2e_implied"] - 1 / (f + (1 - f) / r)) < 1e-9
    # The README's per-step table reads it, with the preset's row for draft (refresh_every=2).
    data["_path"] = str(out)
    table = report.step_table([data])
    # On a CPU the q/k prologue is Diffusers' arithmetic (the fused kernel runs on CUDA): the row says so.
    assert data["qk_prologue"] == "stock"
    assert "| draft-r2 † |" in table and "draft (draft-r2)" in table and "† measured before" in table


def test_step_table_marks_wan_rows_measured_with_the_stock_prologue():
    def run(date, **extra):
        return {"benchmark": "step", "model": "wan1.3b-480p", "family": "wan", "date": date, "layers_timed": 30,
                "layers_full_model": 30, "cfg_calls_per_step": 2, "_path": "x.json", "env": {"device": "H200"},
                "results": {"dense": {"step_s": 1.2}, "radial": {"step_s": 0.7, "ratio_vs_dense": 1.7}}, **extra}

    assert "| radial † |" in report.step_table([run("2026-12-02T10:00:00")])
    assert "| radial |" in report.step_table([run("2026-12-03T01:00:00")])
    assert "| radial † |" in report.step_table([run("2026-12-04T01:00:00", wan_qk_prologue="stock")])
    assert "| radial |" in report.step_table([run("2026-12-01", wan_qk_prologue="fused")])
    assert "| radial † |" in report.step_table([run("2026-12-04T01:00:00", qk_prologue="stock")])
    assert "| radial |" in report.step_table([run("2026-12-04T01:00:00", qk_prologue="fused")])
    # HunyuanVideo's prologue was fused later: its JSONs without the field ran the stock one, whatever their date.
    hunyuan = dict(run("2026-12-05"), model="hunyuan-720p", family="hunyuan_video")
    table = report.step_table([hunyuan])
    assert "| radial † |" in table and "14-25 % longer at HunyuanVideo" in table
    assert "| radial |" in report.step_table([dict(hunyuan, qk_prologue="fused")])
    flux = dict(run("2026-12-02"), model="flux-2048", family="flux")
    assert "| radial † |" in report.step_table([flux]) and "step-flux-" in report.step_table([flux])
    qwen = dict(run("2026-12-02"), model="qwen-image-2048", family="qwen_image")
    assert "| radial † |" in report.step_table([qwen]) and "step-qwen-image-2048-stock" in report.step_table([qwen])


def test_step_table_keeps_a_shortened_model_apart_from_the_full_one():
    """A run of 15 of 60 blocks and a full-depth run of the same model are two tables: mixing their rows would put a
    shortened model's peak memory and yardstick next to the full model's dense step."""

    def run(layers, date, label, step):
        return {"benchmark": "step", "model": "hunyuan-720p", "family": "hunyuan_video", "date": date,
                "layers_timed": layers, "layers_full_model": 60, "cfg_calls_per_step": 1, "_path": f"{layers}.json",
                "env": {"device": "H200"}, "qk_prologue": "fused",
                "results": {"dense": {"step_s": 4 * step, "peak_gib": 1.0},
                            label: {"step_s": step, "ratio_vs_dense": 4.0, "peak_gib": 1.5}}}

    table = report.step_table([run(15, "2026-12-01", "fixed-0.25", 1.0), run(60, "2026-12-02", "radial", 3.0)])
    short, full = table.split("60 of 60 blocks")
    assert "15 of 60 blocks" in short and "| fixed-0.25 |" in short and "| radial |" not in short
    assert "| radial |" in full and "| fixed-0.25 |" not in full and "| 12.000 |" in full


def test_kernel_tables_take_the_newest_run_by_its_date_not_its_file_name():
    def run(date, ms):
        return {"benchmark": "kernel-tile", "date": date, "commit": date, "block_size": 128, "selection": "tile",
                "command": "bench", "env": {"device": "H200"},
                "results": {"flux-4096": {"tokens": 65536, "heads": 24, "head_dim": 128, "dense": {}, "sparse": {
                    "fa4": {"tile": {"median_ms": ms, "density": 0.02, "effective_tflops": 1.0,
                                     "max_abs_err_vs_reference": 0.0}}}}}}

    # In file-name order the older run comes last ("x-more.json" sorts before "x.json").
    table = report.kernel_table([run("2026-12-02T08:00", 2.5), run("2026-12-01T08:00", 4.0)], kind="kernel-tile")
    assert "2.50" in table and "4.00" not in table


def test_kernel_table_is_the_newest_of_the_widest_sweeps():
    """A newer one-shape experiment (a knob, a key block size) does not replace the engine comparison table."""
    def run(date, shapes, ms):
        entry = {"tokens": 1, "heads": 1, "head_dim": 128, "dense": {}, "sparse": {
            "fa4": {"0.25": {"median_ms": ms, "density": 0.25, "effective_tflops": 1.0,
                             "max_abs_err_vs_reference": 0.0}}}}
        return {"benchmark": "kernel", "date": date, "commit": date, "block_size": 128, "selection": "random",
                "command": "bench", "env": {"device": "H200"}, "results": {s: entry for s in shapes}}

    sweep = run("2026-11-23T08:00", ["wan1.3b-480p", "wan14b-720p", "hunyuan-720p"], 2.5)
    table = report.kernel_table([sweep, run("2026-12-02T08:00", ["wan1.3b-480p"], 4.0)])
    assert "2.50" in table and "4.00" not in table


def test_bench_compile_tiny_counts_graphs(tmp_path):
    out = tmp_path / "compile.json"
    rows = _run_bench(out, "compile", "--model", "tiny", "--methods", "draft-r2",
                      "--steps", "3", "--warmup", "1", "--compile-backend", "eager")["results"]
    for name in ("dense-eager", "dense-compiled", "draft-r2-eager", "draft-r2-compiled"):
        assert "error" not in rows[name], rows[name]
        assert rows[name]["step_s"] > 0
    # One graph shared by the repeated blocks, over 3 steps x 2 CFG branches: no recompilation, no graph break.
    assert rows["draft-r2-compiled"]["graphs"] == 1 and rows["draft-r2-compiled"]["graph_breaks"] == 0
    assert rows["draft-r2-eager"]["graphs"] == 0


@pytest.mark.parametrize("model", ["flux-tiny", "qwen-image-tiny"])
def test_bench_step_runs_image_transformers(tmp_path, model):
    out = tmp_path / "step.json"
    data = _run_bench(out, "step", "--model", model, "--methods", "radial,tile",
                      "--dense-variants", "none", "--reps", "1")
    assert data["token_grid"] == [8, 16] and data["cfg_calls_per_step"] == (2 if model.startswith("qwen") else 1)
    for label in ("radial", "tile"):
        assert "error" not in data["results"][label], data["results"][label]
        assert data["results"][label]["mean_density"] is not None  # the calls went through our sparse path
    assert set(data["e2e_implied"]) == {"radial", "tile"}
    data["_path"] = str(out)
    assert "tile (tile)" in report.step_table([data])


def test_bench_crossover_reports_the_smallest_faster_size(tmp_path):
    out = tmp_path / "crossover.json"
    data = _run_bench(out, "crossover", "--frame", "8x16", "--frames", "1,2",
                      "--heads", "2", "--head-dim", "64", "--methods", "radial,draft", "--reps", "1")
    assert sorted(data["results"], key=int) == ["128", "256"]
    for entry in data["results"].values():
        assert entry["dense_sdpa"]["ms"] > 0 and "error" not in entry["radial"] and "error" not in entry["draft"]
    for method, n in data["crossover_tokens"].items():  # None (never faster here) or a measured size
        faster = {int(k) for k, e in data["results"].items() if e[method]["speedup_vs_dense"] > 1.0}
        assert n is None or n in faster


def test_bench_compile_whole_model_semantic(tmp_path):
    """--route model: semantic under torch.compile(transformer, fullgraph=True) compiles a graph per CFG branch for the
    cold first step and one for the warm steps, then no more; with variable pieces and with packed pieces (the video
    presets; their similarity order's balanced partition once drew its starts from a torch.Generator, which Dynamo
    does not take)."""
    out = tmp_path / "compile.json"
    data = _run_bench(out, "compile", "--model", "tiny", "--methods", "semantic-b64,semantic-packed",
                      "--steps", "4", "--warmup", "2", "--compile-backend", "eager", "--route", "model", timeout=600)
    assert data["compile"].startswith("torch.compile(transformer")
    for label in ("semantic-b64-compiled", "semantic-packed-compiled"):
        row = data["results"][label]
        assert "error" not in row, row
        assert row["graphs"] == 4 and row["graph_breaks"] == 0
    assert data["results"]["semantic-packed-compiled"]["config"]["pack_pieces"]


def test_implied_e2e_takes_the_row_of_the_presets_own_draft_density():
    """Wan's draft preset runs at density 0.35: its end-to-end estimate must use the 0.35 row, not the 0.25 one."""
    from dit_sparse.eval.bench import implied_e2e
    from dit_sparse.pipelines.presets import WAN_SPARSE

    ratios = {"draft-r4": 1.75, "draft-0.35-r4": 1.60, "radial": 1.67}
    e = implied_e2e("wan", 30, ratios)["draft"]
    assert e["row"] == "draft-0.35-r4" and e["per_step_ratio"] == 1.60
    ds = WAN_SPARSE["draft"]["dense_steps"]
    assert abs(e["dense_fraction"] - (ds + (1 - ds) / 30)) < 1e-12
    # where the preset's density was not measured, a 0.25 row stands in (named in the table)
    assert implied_e2e("wan", 30, {"draft-r4": 1.75})["draft"]["row"] == "draft-r4"


def test_implied_e2e_takes_the_semantic_presets_own_rows(monkeypatch):
    """Both video presets run packed pieces (pack_pieces): only the packed rows time them, at the preset's period and,
    on Wan, with the CFG branches sharing the plan. Variable-piece presets (the earlier ones, a user's) take their own
    block sizes' rows."""
    from dit_sparse.eval import bench
    from dit_sparse.eval.bench import implied_e2e

    # The presets plan semantic every 3rd sparse step: a row of another period does not stand in for it.
    ratios = {"semantic-b64": 1.41, "semantic-b64-r2-cfg": 1.5, "semantic-packed": 1.65, "semantic-packed-r2": 1.7,
              "semantic-packed-r3": 1.72, "draft-0.35-r4": 1.9, "draft-0.35-r4-cfg": 1.95}
    assert implied_e2e("wan", 30, ratios)["semantic"]["row"] == "semantic-packed-r3"
    assert implied_e2e("wan", 30, {**ratios, "semantic-packed-r3-cfg": 1.8})["semantic"]["row"] == (
        "semantic-packed-r3-cfg")
    del ratios["semantic-packed-r3"]
    assert implied_e2e("wan", 30, ratios)["semantic"]["row"] == "semantic-packed"
    assert implied_e2e("wan", 30, ratios)["draft"]["row"] == "draft-0.35-r4-cfg"
    assert "semantic" not in implied_e2e("wan", 30, {"semantic-b64": 1.41, "semantic-b64-r2": 1.45})
    # HunyuanVideo (one call per step) shares nothing: never a "-cfg" row.
    hunyuan = {"semantic-b128k64-r2": 2.68, "semantic-packed": 2.6, "semantic-packed-r3": 2.68,
               "semantic-packed-r3-cfg": 9.0}
    assert implied_e2e("hunyuan_video", 60, hunyuan)["semantic"]["row"] == "semantic-packed-r3"
    assert implied_e2e("hunyuan_video", 60, {"draft-0.1-r2": 4.0, "draft-0.1-r2-cfg": 9.0})["draft"]["row"] == (
        "draft-0.1-r2")

    # One warm k-means iteration (the presets since session 21): its own rows first, then the period's rows.
    assert implied_e2e("hunyuan_video", 60, {**hunyuan, "semantic-packed-w1-r3": 2.7})["semantic"]["row"] == (
        "semantic-packed-w1-r3")
    wan_rows = {"semantic-packed-r3": 1.7, "semantic-packed-w1-r3": 1.75, "semantic-packed-r3-cfg": 1.8}
    assert implied_e2e("wan", 30, wan_rows)["semantic"]["row"] == "semantic-packed-r3-cfg"
    assert implied_e2e("wan", 30, {**wan_rows, "semantic-packed-w1-r3-cfg": 1.82})["semantic"]["row"] == (
        "semantic-packed-w1-r3-cfg")

    # A variable-piece preset with 64-token pieces: semantic-b64 at its period, the 128-token rows (measured before
    # the planning fix) only where neither was measured.
    wan = {"semantic": {"dense_steps": 0.2, "dense_layers": 1, "refresh_every": 2, "share_cfg_layouts": True}}
    monkeypatch.setattr(bench, "_family_presets", lambda family: wan)
    ratios = {"semantic-r2": 0.5, "semantic": 0.6, "semantic-b64": 1.41, "semantic-b64-r2": 1.45}
    assert implied_e2e("wan", 30, ratios)["semantic"]["row"] == "semantic-b64-r2"
    del ratios["semantic-b64-r2"]
    assert implied_e2e("wan", 30, ratios)["semantic"]["row"] == "semantic-b64"
    assert implied_e2e("wan", 30, {"semantic-r2": 0.5, "semantic": 0.6})["semantic"]["row"] == "semantic-r2"
    assert implied_e2e("wan", 30, {**ratios, "semantic-b64-r2-cfg": 1.5})["semantic"]["row"] == (
        "semantic-b64-r2-cfg")
    # 128-token query pieces with 64-token key pieces: only those rows time it.
    hy = {"semantic": {"dense_steps": 0.2, "dense_layers": 1, "refresh_every": 2, "block_size": 128,
                       "kv_block_size": 64}}
    monkeypatch.setattr(bench, "_family_presets", lambda family: hy)
    hunyuan = {"semantic-b64-r2": 2.4, "semantic-b64": 2.35, "semantic-b128k64-fa4": 2.64}
    assert implied_e2e("hunyuan_video", 60, hunyuan)["semantic"]["row"] == "semantic-b128k64-fa4"
    assert implied_e2e("hunyuan_video", 60, {**hunyuan, "semantic-b128k64-r2": 2.8})["semantic"]["row"] == (
        "semantic-b128k64-r2")
    assert "semantic" not in implied_e2e("hunyuan_video", 60, {"semantic-b64": 2.35})


def test_implied_e2e_times_fast_dense_steps_by_the_fa4_full_row(monkeypatch):
    """The presets run their dense steps on FA4 (``fast_dense``): the dense fraction costs 1 / fa4-full of a default
    dense step there; without the row, or for a preset that keeps Diffusers' dense steps, 1."""
    from dit_sparse.eval.bench import implied_e2e
    from dit_sparse.pipelines.presets import HUNYUAN_SPARSE, WAN_SPARSE

    assert HUNYUAN_SPARSE["draft"]["fast_dense"] and WAN_SPARSE["draft"]["fast_dense"]
    ratios = {"draft-0.1-r2": 4.56, "fa4-full": 1.47}
    e = implied_e2e("hunyuan_video", 60, ratios)["draft"]
    f = e["dense_fraction"]
    assert e["dense_ratio"] == 1.47 and abs(e["e2e_implied"] - 1 / (f / 1.47 + (1 - f) / 4.56)) < 1e-12
    # without the row the dense steps count at Diffusers' speed
    assert implied_e2e("hunyuan_video", 60, {"draft-0.1-r2": 4.56})["draft"]["dense_ratio"] == 1.0
    assert implied_e2e("wan", 30, {"draft-0.35-r4": 1.6, "fa4-full": 1.07})["draft"]["dense_ratio"] == 1.07
    monkeypatch.setitem(WAN_SPARSE, "draft", {**WAN_SPARSE["draft"], "fast_dense": False})
    assert implied_e2e("wan", 30, {"draft-0.35-r4": 1.6, "fa4-full": 1.07})["draft"]["dense_ratio"] == 1.0


def test_implied_e2e_times_balanced_semantic_by_its_own_rows(monkeypatch):
    """A semantic preset with balanced groups runs fixed layouts: its estimate must not borrow the k-means rows."""
    from dit_sparse.eval.bench import implied_e2e
    from dit_sparse.pipelines import presets

    ratios = {"semantic-b64": 0.90, "semantic-balanced": 1.07, "semantic-balanced-r4": 1.50}
    monkeypatch.setitem(presets.WAN_SPARSE, "semantic", {"dense_steps": 0.2, "dense_layers": 1, "top_p": 0.9})
    assert implied_e2e("wan", 30, ratios)["semantic"]["row"] == "semantic-b64"
    balanced = {"dense_steps": 0.2, "dense_layers": 1, "top_p": 0.9, "clusters": "balanced", "block_size": 128}
    monkeypatch.setitem(presets.WAN_SPARSE, "semantic", {**balanced, "refresh_every": 4})
    assert implied_e2e("wan", 30, ratios)["semantic"]["row"] == "semantic-balanced-r4"
    monkeypatch.setitem(presets.WAN_SPARSE, "semantic", balanced)
    assert implied_e2e("wan", 30, ratios)["semantic"]["row"] == "semantic-balanced"
    assert "semantic" not in implied_e2e("wan", 30, {"semantic-b64": 0.9})
    # Packed pieces are fixed layouts too: their own rows.
    packed = {"dense_steps": 0.2, "dense_layers": 1, "top_p": 0.9, "pack_pieces": True, "block_size": 128}
    monkeypatch.setitem(presets.WAN_SPARSE, "semantic", {**packed, "refresh_every": 2})
    ratios = {"semantic-b64": 0.90, "semantic-packed": 1.6, "semantic-packed-r2": 1.7}
    assert implied_e2e("wan", 30, ratios)["semantic"]["row"] == "semantic-packed-r2"
    assert "semantic" not in implied_e2e("wan", 30, {"semantic-b64": 0.9})


def test_schedule_tradeoff_marks_the_rows_no_other_beats(tmp_path):
    from dit_sparse.eval.report import schedule_tradeoff_section

    def q(method, ds, psnr, **extra):
        return {"psnr": psnr, "ssim": 0.9, "density": extra.get("density", 0.5),
                "config": {"method": method, "dense_steps": ds, "dense_layers": 1, **extra}}

    quality = {"commit": "abc", "settings": {"steps": 20, "prompts": 2}, "results": {
        "dense": {"seconds": 1.0},
        "draft fast": q("draft", 0.1, 24.0, density=0.25),  # fastest
        "draft slow worse": q("draft", 0.3, 23.0, density=0.25),  # slower and worse than "draft fast": no star
        "tile": q("tile", 0.25, 30.0),  # best quality
    }}
    (tmp_path / "quality-small-dense-steps.json").write_text(json.dumps(quality))
    run = {"benchmark": "step", "model": "wan1.3b-480p", "date": "2026-12-02", "layers_timed": 30,
           "layers_full_model": 30,
           "results": {"dense": {"step_s": 1.0}, "draft-r4": {"ratio_vs_dense": 1.75},
                       "tile": {"ratio_vs_dense": 1.5}}}
    text = schedule_tradeoff_section([run], str(tmp_path))
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "★ draft fast" in rows and "★ tile" in rows and "draft slow worse" in rows
    f = 0.1 + 0.9 / 30
    assert f"{1 / (f + (1 - f) / 1.75):.2f}×" in rows["★ draft fast"]


def test_bench_pattern_presets_on_photographic_qk_amortise_planning_over_the_refresh_period(monkeypatch, tmp_path):
    """`bench pattern --presets --qkv photo`: each method at the preset's options (tiny's semantic has 64 clusters,
    draft here plans every 4th sparse step for both CFG calls), planning per sparse call divided by the calls a plan
    serves for a dynamic pattern and not at all for a static one, and realistic densities: on Gaussian q/k semantic's
    top_p 0.9 keeps ~0.9 of the blocks, on photographic q/k far fewer."""
    import argparse

    from dit_sparse.eval import bench
    from dit_sparse.pipelines.presets import PRESETS

    tiny = PRESETS["tiny"]
    monkeypatch.setitem(PRESETS, "tiny", tiny.replace(sparse={**tiny.sparse, "draft": {
        **tiny.sparse["draft"], "refresh_every": 4, "share_cfg_layouts": True}}))
    args = argparse.Namespace(shape="tiny", methods="radial,draft,semantic", backend="reference", reps=1,
                              presets=True, qkv="photo", out=str(tmp_path / "pattern.json"))
    rows = bench.bench_pattern(args)["results"]
    assert not any("error" in e for e in rows.values()), rows
    assert rows["radial"]["static"] and rows["radial"]["overhead_at_schedule"] == rows["radial"]["overhead_ratio"]
    draft = rows["draft"]
    # Every 4th sparse step, and (tiny is a Wan model: two CFG calls per step) shared by both calls of the step.
    assert not draft["static"] and draft["refresh_every"] == 4 and draft["calls_per_plan"] == 8
    assert draft["overhead_at_schedule"] == pytest.approx(draft["overhead_ratio"] / 8)
    assert rows["semantic"]["calls_per_plan"] == 1 and not rows["semantic"]["share_cfg_layouts"]
    # Dynamic patterns are also timed launched behind a sparse attention call; a static one plans nothing there.
    assert "plan_behind_attention_ms" not in rows["radial"]
    assert draft["overhead_at_schedule_behind_attention"] == pytest.approx(
        max(0.0, draft["plan_behind_attention_ms"]) / 8 / draft["attention_ms"])
    assert rows["semantic"]["options"]["kv_clusters"] == 64
    assert rows["semantic"]["density"] < 0.6
    data = json.loads((tmp_path / "pattern.json").read_text())
    assert data["presets"] == "tiny" and data["qkv"] == "photo"


def test_pattern_table_prefers_the_preset_runs_and_says_how_often_each_plans():
    row = dict(plan_ms=1.0, cold_ms=2.0, attention_ms=4.0, overhead_ratio=0.25, density=0.3)
    old = {"benchmark": "pattern", "shape": "wan1.3b-480p", "tokens": 32760, "heads": 12, "date": "2026-12-01",
           "results": {"draft": row}}
    new = {"benchmark": "pattern", "shape": "hunyuan-720p", "tokens": 118800, "heads": 24, "date": "2026-12-03",
           "presets": "hunyuanvideo", "qkv": "photo",
           "results": {"draft": dict(row, static=False, refresh_every=2, overhead_at_schedule=0.125),
                       "radial": dict(row, static=True, refresh_every=1, overhead_at_schedule=0.25)}}
    text = report.pattern_table([old, new])
    assert "wan1.3b-480p" not in text and "`hunyuanvideo` preset, photo q/k" in text
    assert "| every 2 sparse steps | 12.5 % | — |" in text and "| once per geometry | 25.0 % | — |" in text
    assert "wan1.3b-480p" in report.pattern_table([old])
    # A later run of one method (a changed preset) replaces that method's row and keeps the others, each row naming
    # its file.
    newer = {"benchmark": "pattern", "shape": "hunyuan-720p", "tokens": 118800, "heads": 24, "date": "2026-12-04",
             "presets": "hunyuanvideo", "qkv": "photo", "_path": "bench/results/pattern-hunyuan-newer.json",
             "results": {"draft": dict(row, static=False, refresh_every=2, overhead_at_schedule=0.0625)}}
    text = report.pattern_table([old, new, newer])
    assert "| every 2 sparse steps | 6.2 % | — | `pattern-hunyuan-newer.json` |" in text
    assert "| once per geometry | 25.0 % | — | — |" in text and "12.5 %" not in text
    # The plan launched behind the attention (session 21): its share at the schedule and its ms.
    newest = dict(newer, date="2026-12-05", results={"draft": dict(
        newer["results"]["draft"], plan_behind_attention_ms=0.25, overhead_at_schedule_behind_attention=0.03125)})
    text = report.pattern_table([old, new, newest])
    assert "| every 2 sparse steps | 6.2 % | 3.1 % (0.25 ms) |" in text and "launched behind" in text


def test_paired_extra_ms_is_what_the_second_call_adds():
    """On the CPU (wall clock) the pairs' difference is the second call's time, not both calls'."""
    import time

    from dit_sparse.eval.bench import paired_extra_ms

    extra = paired_extra_ms(lambda: time.sleep(0.004), lambda: time.sleep(0.012), reps=5)
    assert 10.0 < extra < 15.0


def test_step_profile_table_splits_gpu_time_by_kernel_kind():
    profile = {"steps": 2, "busy_ms": 100.0, "kernels": [
        {"name": "kernel_cutlass_kernel_flash_attncuteflash_fwd_sm90", "ms": 40.0, "calls": 10},
        {"name": "nvjet_sm90_tst_192x208", "ms": 30.0, "calls": 20},
        {"name": "void at::native::_scatter_gather_elementwise_kernel<128, 8>", "ms": 8.0, "calls": 5},
        {"name": "_assign_kernel", "ms": 2.0, "calls": 1}, {"name": "_permute_rows", "ms": 1.0, "calls": 4},
        {"name": "void at::native::elementwise_kernel<128, 4>", "ms": 5.0, "calls": 7}]}
    split = report.step_kernel_split(profile)
    # FA4's CuTe kernel is attention, not a CUTLASS matmul; rest = busy - the named kinds (kernels off the list too).
    assert split == {"attention": 40.0, "matmuls": 30.0, "gathers": 9.0, "k-means assign": 2.0, "rest": 19.0}
    run = {"benchmark": "step", "model": "hunyuan-720p", "layers_timed": 15, "date": "2026-12-04", "_path": "s.json",
           "results": {"dense": {"step_s": 8.0, "gpu_kernels": profile},
                       "semantic": {"step_s": 2.0, "ratio_vs_dense": 4.0, "mean_density": 0.22,
                                    "gpu_kernels": profile},
                       "fixed-0.25": {"step_s": 1.9, "ratio_vs_dense": 4.2, "mean_density": 0.25}}}
    table = report.step_profile_table([run])
    assert "| hunyuan-720p (15) | semantic | 0.22 | 2.000 | 0.95 | 100 | 40 | 30 | 9 | 2 | 19 | `s.json` |" in table
    assert "| fixed-0.25 |" not in table  # not profiled


def test_device_info_records_the_switches_set_for_the_run(monkeypatch):
    # A kernel experiment (DIT_SPARSE_TRITON_TMA=1) changes what a benchmark times: its JSON says so.
    from dit_sparse.eval.bench import device_info

    monkeypatch.delenv("DIT_SPARSE_TRITON_TMA", raising=False)
    assert "DIT_SPARSE_TRITON_TMA" not in device_info().get("switches", {})
    monkeypatch.setenv("DIT_SPARSE_TRITON_TMA", "1")
    monkeypatch.setenv("DIT_SPARSE_COMMIT", "abc")
    switches = device_info()["switches"]
    assert switches["DIT_SPARSE_TRITON_TMA"] == "1"
    assert "DIT_SPARSE_COMMIT" not in switches
