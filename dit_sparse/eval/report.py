"""Turns ``bench/results/*.json`` into README tables and plots under ``docs/`` (never typed by hand).

    python -m dit_sparse.eval.report [--results bench/results] [--readme README.md] [--docs docs]

The "quality" section ("Quality on the trained models") reads ``quality-<model>.json`` (`dit_sparse.eval.quality`)
and ``oracle-<model>.json`` (`dit_sparse.eval.oracle`) for ``tiny`` and ``small``; a missing one gets a line naming
the command that writes it.

README sections live between ``<!-- BEGIN:name -->`` and ``<!-- END:name -->`` markers and are replaced in place.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..config import EVERY_TILE


def load_results(results_dir: str = "bench/results") -> List[dict]:
    out = []
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        data["_path"] = path
        out.append(data)
    return out


def _latest(results: List[dict], kind: str) -> List[dict]:
    """The newest result per (benchmark, model/shape) by its recorded date (file names start with the day only, and
    "x-more.json" sorts before "x.json")."""
    chosen: Dict[str, dict] = {}
    for r in sorted(results, key=lambda r: r.get("date", "")):
        if r.get("benchmark") != kind:
            continue
        key = r.get("model") or r.get("shape") or "all"
        chosen[key] = r
    return list(chosen.values())


def _e2e_runs(results: List[dict]) -> List[dict]:
    """The end-to-end runs that hold the newest measurement of some method, per model and compile mode: a run of one
    method (HunyuanVideo's draft, a rerun with a longer warm-up) does not hide an older run of the others, and a run
    all of whose methods were measured again since drops out. Each run stays whole (its ratios are to its own dense
    run). Where a model has runs at its presets' schedules (``--presets``), runs at another schedule drop out."""
    covered: Dict[tuple, set] = {}
    chosen = []
    runs = [r for r in results if r.get("benchmark") == "e2e"]
    with_presets = {r.get("model") for r in runs if r.get("presets")}
    for r in sorted(runs, key=lambda r: r.get("date", ""), reverse=True):
        if r.get("model") in with_presets and not r.get("presets"):
            continue
        key = (r.get("model"), r.get("compile") or "")
        methods = {m for m in r.get("runs", {}) if not m.startswith("dense")}
        if key not in covered or methods - covered[key]:
            chosen.append(r)
        covered.setdefault(key, set()).update(methods)
    return sorted(chosen, key=lambda r: (r.get("model", ""), bool(r.get("compile")), r.get("date", "")))


def _fmt(x, nd=2):
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _kernel_runs(results: List[dict], kind: str) -> List[dict]:
    """The kernel table compares engines over the model shapes: it is the newest of the widest sweeps (most shapes);
    narrower runs (one shape for a knob, a key block size, one engine) are experiments the prose cites by file."""
    if kind != "kernel":
        return _latest(results, kind)
    runs = [r for r in results if r.get("benchmark") == kind]
    widest = max((len(r.get("results", {})) for r in runs), default=0)
    return _latest([r for r in runs if len(r.get("results", {})) == widest], kind)


def _opt(entry: dict, key: str, digits: int = 0) -> str:
    """``entry[key]`` with ``digits`` decimals, or "—" where the run did not measure it."""
    value = entry.get(key)
    return "—" if value is None else f"{value:.{digits}f}"


def kernel_table(results: List[dict], kind: str = "kernel") -> str:
    """The newest ``kind`` run ("kernel": random layouts per density, the newest of the widest sweeps; "kernel-tile":
    the tile pattern and a random layout of its density, rows named by their layout)."""
    lines = []
    for r in _kernel_runs(results, kind):
        dev = r.get("env", {}).get("device", "?")
        lines.append(f"Device: {dev}, commit `{r.get('commit', '?')[:10]}`, block {r.get('block_size')}, "
                     f"{r.get('selection', '')}; `{r.get('command', '')}`\n")
        # Runs since session 24 also have the kernels' own CUDA time and calls queued back to back (a single call
        # from an idle GPU also holds its host path); older runs show "—" there.
        lines.append("| shape | engine | density | time (ms) | effective TFLOP/s | kernel time (ms) "
                     "| effective TFLOP/s, kernel time | effective TFLOP/s, queued | × dense cuDNN time | max err |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for shape, e in r["results"].items():
            dense = e["dense"]
            dense_ms = dense.get("cudnn_sdpa", {}).get("median_ms") or dense.get("sdpa", {}).get("median_ms")
            for name, t in e["dense"].items():
                if "median_ms" in t:
                    lines.append(f"| {shape} ({e['tokens']}×{e['heads']}) | {name} (dense) | 1.00 | "
                                 f"{t['median_ms']:.2f} | {t['tflops']:.0f} | {_opt(t, 'kernel_ms', 2)} | "
                                 f"{_opt(t, 'kernel_tflops')} | {_opt(t, 'queued_tflops')} | 1.00 | — |")
            for backend, rows in e["sparse"].items():
                if "unavailable" in rows:
                    lines.append(f"| {shape} | {backend} | — | unavailable: {rows['unavailable']} | | | | | | |")
                    continue
                for d, t in rows.items():
                    if "median_ms" not in t:
                        lines.append(f"| {shape} | {backend} | {d} | error: {t.get('error', '')[:80]} | | | | | | |")
                        continue
                    ratio = t["median_ms"] / dense_ms if dense_ms else None
                    err = t["max_abs_err_vs_reference"]
                    # Rows of "kernel" are densities; rows of "kernel-tile" name their layout ("tile", "tile-in-order",
                    # "random-0.018": the density is printed from the entry).
                    name = d[: d.rfind("-")] if d.startswith("random-") else d
                    density = f"{t['density']:.2f}" if kind == "kernel" else f"{name} {t['density']:.3f}"
                    lines.append(f"| {shape} | {backend} | {density} | {t['median_ms']:.2f} | "
                                 f"{t['effective_tflops']:.0f} | {_opt(t, 'kernel_ms', 2)} | "
                                 f"{_opt(t, 'effective_kernel_tflops')} | {_opt(t, 'effective_queued_tflops')} | "
                                 f"{_fmt(ratio)} | {err:.1e} |")
        lines.append("")
    return "\n".join(lines) if lines else "_no kernel results yet_"


def e2e_table(results: List[dict]) -> str:
    lines = []
    for r in _e2e_runs(results):
        dev = r.get("env", {}).get("device", "?")
        share = r.get("attention_share")
        compiled = r.get("compile")
        lines.append(f"**{r['model']}**{', compiled' if compiled else ''} on {dev}, {r['steps']} steps (dense steps "
                     f"{r['dense_steps']}, dense layers {r['dense_layers']}), CFG {r['cfg']}, attention share of a "
                     f"dense forward {_fmt(share)}; commit `{r.get('commit', '?')[:10]}`; `{r.get('command', '')}`\n")
        if compiled:
            lines.append(f"Every row but `dense` (Diffusers' default, eager) runs `{compiled}`, compiled in the "
                         "warm-up; speedups are against the eager dense run and against dense compiled.\n")
            lines.append("| method | seconds | speedup vs dense (eager) | vs dense compiled | graphs (in timed run) | "
                         "backend | PSNR latents vs dense |")
            lines.append("|---|---|---|---|---|---|---|")
        else:
            lines.append("| method | seconds | speedup | Amdahl bound (free attention) | Amdahl at density | "
                         "density | backend | PSNR latents vs dense |")
            lines.append("|---|---|---|---|---|---|---|---|")
        footnote = late_graphs = False
        for m, e in r["runs"].items():
            if "error" in e:
                lines.append(f"| {m} | error: {e['error'][:100]} | | | | | |{'' if compiled else ' |'}")
                continue
            speedup = e.get("speedup", 1.0 if m == "dense" else None)
            if compiled:
                vs_compiled = 1.0 if m == "dense-compiled" else e.get("speedup_vs_dense_compiled")
                graphs = f"{e['graphs']} ({e.get('graphs_compiled_in_timed_run', 0)})" if "graphs" in e else "—"
                if e.get("graphs_compiled_in_timed_run"):
                    graphs += " ‡"
                    late_graphs = True
                lines.append(f"| {m} | {_fmt(e.get('seconds'))} | {_fmt(speedup)} | {_fmt(vs_compiled)} | {graphs} | "
                             f"{e.get('backend', '—')} | "
                             f"{_fmt(e.get('psnr_latents_vs_dense'), 1)} |")
                continue
            # The bounds keep everything but the sparse calls' attention at a dense step's cost; with fast_dense the
            # dense steps run FA4 (and, on Wan, the fused q/k prologue), so they bound nothing.
            bounded = not e.get("config", {}).get("fast_dense")
            footnote = footnote or not bounded
            lines.append(f"| {m} | {_fmt(e.get('seconds'))} | {_fmt(speedup)} | "
                         f"{_fmt(e.get('amdahl_bound') if bounded else None)} | "
                         f"{_fmt(e.get('amdahl_at_density') if bounded else None)} | "
                         f"{_fmt(e.get('mean_density'))} | {e.get('backend', '—')} | "
                         f"{_fmt(e.get('psnr_latents_vs_dense'), 1)} |")
        if late_graphs:
            lines.append("\n‡ : graphs were still compiled in the timed run (its warm-up lacked a kind of step), so "
                         "its time includes compilation: not a clean measurement.")
        if footnote:
            lines.append("\n— : the run's preset has `fast_dense` (dense steps on FlashAttention-4, q and k from the "
                         "fused prologue), which the Amdahl bounds (everything but sparse attention at Diffusers' "
                         "dense cost) do not model.")
        lines.append("")
    return "\n".join(lines) if lines else "_no end-to-end results yet_"


def _pattern_runs(results: List[dict]) -> List[Tuple[dict, Dict[str, Tuple[dict, dict]]]]:
    """Per shape, (its newest run, {method: (entry, the run it came from)}): runs at the presets with realistic q/k
    replace the older runs at the configs' defaults, and among them each method's newest measurement is kept (a run
    of one method, such as a changed preset, does not hide the others)."""
    runs = [r for r in results if r.get("benchmark") == "pattern"]
    if any(r.get("presets") for r in runs):
        runs = [r for r in runs if r.get("presets")]
    shapes: Dict[str, Tuple[dict, Dict[str, Tuple[dict, dict]]]] = {}
    for r in sorted(runs, key=lambda r: r.get("date", "")):
        key = r.get("shape") or "all"
        rows = dict(shapes.get(key, (r, {}))[1])
        rows.update({m: (e, r) for m, e in r.get("results", {}).items()})
        shapes[key] = (r, rows)
    return list(shapes.values())


def pattern_table(results: List[dict]) -> str:
    lines = []
    for r, rows in _pattern_runs(results):
        dev = r.get("env", {}).get("device", "?")
        what = (f"each method at the `{r['presets']}` preset, {r.get('qkv', 'random')} q/k" if r.get("presets")
                else "each method at its config's defaults, random q/k")
        sources = list({id(run): run for _, run in rows.values()}.values())
        commands = "; ".join(f"`{run.get('command', '')}` (commit `{run.get('commit', '?')}`)" for run in sources)
        lines.append(f"{r['shape']} ({r['tokens']} tokens × {r['heads']} heads) on {dev}, {what}; {commands}\n")
        lines.append("| method | plan (ms, warm) | plan (ms, cold) | sparse attention (ms) | overhead per plan "
                     "| density | planned | overhead per sparse call at the schedule | ... launched behind the "
                     "attention | file |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for m, (e, run) in rows.items():
            source = f"`{os.path.basename(run['_path'])}`" if run.get("_path") else "—"
            if "error" in e:
                lines.append(f"| {m} | error: {e['error'][:100]} | | | | | | | | {source} |")
                continue
            if "overhead_at_schedule" in e:
                every = e["refresh_every"]
                planned = ("once per geometry" if e["static"] else
                           "every sparse step" if every == 1 else f"every {every} sparse steps")
                if not e["static"] and e.get("calls_per_plan", every) > every:
                    planned += ", shared by both CFG calls"
                at_schedule = f"{100 * e['overhead_at_schedule']:.1f} %"
            else:
                planned, at_schedule = "—", "—"
            behind = e.get("overhead_at_schedule_behind_attention")
            behind = "—" if behind is None else f"{100 * behind:.1f} % ({e['plan_behind_attention_ms']:.2f} ms)"
            lines.append(f"| {m} | {e['plan_ms']:.2f} | {e['cold_ms']:.2f} | {e['attention_ms']:.2f} | "
                         f"{100 * e['overhead_ratio']:.1f} % | {e['density']:.2f} | {planned} | {at_schedule} | "
                         f"{behind} | {source} |")
        if any("overhead_at_schedule_behind_attention" in e for e, _ in rows.values()):
            lines.append("\nThe plan is timed alone (its launches on an idle GPU: a small plan is bound by them) and "
                         "launched behind one sparse attention call, as in a pipeline, where its launches overlap "
                         "queued GPU work (`paired_extra_ms`, the plan's ms in brackets, negative = fully hidden). "
                         "It can also cost more there than alone: at 720p it does, because the plan's kernels run "
                         "slower right after a long attention kernel (session 22, `bench/probe_plan_behind.py`).")
        lines.append("")
    return "\n".join(lines) if lines else "_no pattern results yet_"


STEP_ROW_NOTES = {
    "dense": "Diffusers' default attention", "dense-cudnn": "Diffusers `_native_cudnn` backend",
    "fa4-full": "FA4, every block listed", "fixed-0.25": "yardstick: fixed random layout 0.25",
    "fixed-0.35": "fixed random layout 0.35", "fixed-0.5": "fixed random layout 0.5",
    "draft-0.35-r4": "density 0.35, refresh_every=4 (Wan's preset)",
    "fixed-0.1": "fixed random layout 0.1", "draft-0.1-r2": "density 0.1, refresh_every=2 (HunyuanVideo's preset)",
    "draft": "fixed blocks (default)", "draft-r2": "fixed blocks, refresh_every=2",
    "draft-r4": "fixed blocks, refresh_every=4",
    "draft-tiles": "one block per tile (variable)", "semantic": "variable blocks <= 128",
    "semantic-b64": "variable blocks <= 64 (default)", "semantic-b64-r2": "blocks <= 64, refresh_every=2",
    "semantic-b64-r2-cfg": "blocks <= 64, refresh_every=2, CFG branches share the plan (Wan's preset)",
    "draft-0.35-r4-cfg": "density 0.35, refresh_every=4, CFG branches share the plan (Wan's preset)",
    "semantic-b64-triton": "blocks <= 64 on our Triton kernel",
    "semantic-b64-fa4": "blocks <= 64 as whole 64-token tiles of a padded sequence on FA4",
    "semantic-b64-r2-cfg-fa4": "blocks <= 64 on FA4's padded tiles, refresh_every=2, CFG branches share the plan",
    "semantic-b128k64": "query pieces <= 128, key pieces <= 64 (HunyuanVideo's preset, sessions 15-16)",
    "semantic-b128k64-r2": ("query pieces <= 128, key pieces <= 64, refresh_every=2 (HunyuanVideo's preset, "
                            "sessions 15-16)"),
    "semantic-b128k64-triton": "query pieces <= 128, key pieces <= 64, on our Triton kernel",
    "semantic-b128k64-fa4": ("query pieces <= 128, key pieces <= 64, on FA4's padded tiles (HunyuanVideo's preset, "
                             "sessions 15-16)"),
    "semantic-b128k64-m256-fa4": "query pieces <= 128, key pieces <= 64, clusters of >= 256 tokens on average, FA4",
    "semantic-b128k64-m512-fa4": "query pieces <= 128, key pieces <= 64, clusters of >= 512 tokens on average, FA4",
    "semantic-b64-m256-fa4": "blocks <= 64, clusters of >= 256 tokens on average, FA4",
    "semantic-round": "blocks <= 64, cluster sizes rounded to blocks (tried, reverted: commit e12ac38)",
    "semantic-b32": "variable blocks <= 32",
    "semantic-balanced": "balanced groups of 128 tokens as fixed blocks",
    "semantic-balanced-r2": "balanced groups, refresh_every=2",
    "semantic-balanced-r4": "balanced groups, refresh_every=4",
    "semantic-rounded": "k-means clusters resized to whole 128-token blocks (tried, reverted: commit cc3d9d2)",
    "semantic-rounded-k64": "clusters rounded to 128-token blocks, 64-token key blocks (tried, reverted: cc3d9d2)",
    "semantic-cover": "SVG2's rule on joint clusters, fixed blocks covering it (tried, reverted: commit 459013e)",
    "semantic-cover-p2": "as semantic-cover at top_p 0.2 (tried, reverted: commit 459013e)",
    "semantic-cover-clusters": "pooled rule on whole clusters, fixed blocks covering it (tried, reverted: 65ae3e7)",
    "semantic-cover-clusters-r2": "as semantic-cover-clusters, refresh_every=2 (tried, reverted: 65ae3e7)",
    "semantic-packed": "cluster pieces packed whole into 128-token fixed blocks (a cover of the selection)",
    "semantic-packed-r2": "packed pieces, refresh_every=2",
    "semantic-packed-p2": "packed pieces at top_p 0.2",
    "semantic-packed-k64": "packed 128 / 64 pieces (64-token key blocks)",
    "semantic-packed-b64": "cluster pieces packed whole into 64-token fixed blocks",
    "semantic-packed-r2-cfg": "packed pieces, refresh_every=2, CFG branches sharing the layout (Wan's preset, "
                              "sessions 17-19)",
    "semantic-packed-r3": "packed pieces, refresh_every=3 (HunyuanVideo's preset, session 20)",
    "semantic-packed-r3-cfg": "packed pieces, refresh_every=3, CFG branches sharing the layout (Wan's preset, "
                              "session 20)",
    "semantic-packed-s4-r3": "packed pieces, refresh_every=3, k-means fitted on every 4th token first",
    "semantic-packed-s4-r3-cfg": "packed pieces, refresh_every=3, CFG sharing, k-means fitted on every 4th token",
    "semantic-packed-w1-r3": "packed pieces, refresh_every=3, one warm k-means iteration (HunyuanVideo's preset)",
    "semantic-packed-w1-r3-cfg": "packed pieces, refresh_every=3, one warm k-means iteration, CFG sharing "
                                 "(Wan's preset)",
    "semantic-packed-w1-r3-cfg-trim": "Wan's preset with the index lists' width read on the host every plan "
                                      "(static_kmax=False, as before session 22)",
    "semantic-packed-p2-r2-cfg": "the presets' packed pieces at top_p 0.2 (density nearer the yardstick's)",
    "semantic-packed-p15-r2-cfg": "the presets' packed pieces at top_p 0.15 (density nearer the yardstick's)",
    "semantic-packed-r2-cfg-triton": "Wan's preset on our Triton kernel (GPUs without FA4)",
    "semantic-packed-w1-r2-cfg": "as Wan's preset with one warm k-means iteration per plan (warm_iters=1)",
    "semantic-fixed": "fixed blocks", "semantic-fixed-r2": "fixed blocks, refresh_every=2",
    "semantic-r2": "blocks <= 128, refresh_every=2",
    "radial": "static, default decay", "tile": "tile neighbourhood (the preset's)",
    "semantic-k64": "blocks <= 128, 64 clusters",
    "semantic-k128": "blocks <= 128, 128 clusters", "semantic-k64-r2": "blocks <= 128, 64 clusters, refresh 2",
}


def _step_row_note(label: str, entry: dict) -> str:
    """What a step row ran: its fixed note, and for a tile row the tiles and window its JSON records (the "tile" row
    ran TileConfig's 3x3x3 window on video before the video presets had a tile entry)."""
    note = STEP_ROW_NOTES.get(label, "")
    config = entry.get("config") or {}
    if config.get("method") == "tile" and config.get("window"):
        tile = "x".join(map(str, config["tile"])) + " tiles" if config.get("tile") else "default tiles"
        window = " x ".join("every" if w >= EVERY_TILE else str(w) for w in config["window"])
        note = f"{tile}, window {window} (frames x rows x columns of tiles)"
        if config.get("blocks") == "fixed":
            note += ", edge tiles packed into full blocks"
    return note


def step_rows_by_model(results: List[dict]) -> Dict[tuple, Dict[str, tuple]]:
    """(model, blocks built) -> row label -> (entry, run) of every step-benchmark JSON, the newest run by its recorded
    date winning for a label; failed rows left out."""
    by_model: Dict[tuple, Dict[str, tuple]] = {}
    for r in sorted(results, key=lambda r: r.get("date", "")):
        if r.get("benchmark") != "step":
            continue
        rows = by_model.setdefault((r["model"], r.get("layers_timed")), {})
        for label, e in r["results"].items():
            if "error" not in e:
                rows[label] = (e, r)
    return by_model


# The first step runs with Wan's fused q/k prologue are of 2026-12-03 (UTC); later JSONs say which they ran
# (``wan_qk_prologue``, then ``qk_prologue`` once the other families' were fused: theirs without it are stock).
FUSED_PROLOGUE_SINCE = "2026-12-03"
# What the stock prologue cost, measured against the fused one in the same session (for the table's footnote).
STOCK_PROLOGUE_COST = {
    "wan": "a sparse step then took 7-8 % longer at Wan-1.3B 480p and 4 % at Wan-14B 720p "
           "(`...step-wan1.3b-480p-stock-prologue.json`, `...step-wan14b-720p-stock-prologue.json`)",
    "hunyuan_video": "a sparse step then took 14-25 % longer at HunyuanVideo 720p (15 of 60 blocks; "
                     "`...step-hunyuan-720p-stock-prologue.json` against `...-fused-prologue.json`)",
    "flux": "a sparse step then took 16-28 % longer at 2048² and 4096² (6 blocks; "
            "`...step-flux-{2048,4096}-stock-prologue.json` against `...-fused-prologue.json`)",
    "qwen_image": "a sparse step then took 21-22 % longer at 2048² (6 blocks; "
                  "`...step-qwen-image-2048-stock-prologue.json` against `...-fused-prologue.json`)",
}


def _step_family(run: dict) -> str:
    # Early step JSONs (Wan and HunyuanVideo only) do not record their family.
    return run.get("family") or ("hunyuan_video" if run["model"].startswith("hunyuan") else "wan")


def _stock_qk_prologue(run: dict) -> bool:
    """Whether a step run built q and k with Diffusers' arithmetic on its sparse calls where the fused prologue exists
    now (``qk_prologue``, ``wan_qk_prologue``, or for Wan JSONs written before either field, their date)."""
    family = _step_family(run)
    if family not in STOCK_PROLOGUE_COST:
        return False
    recorded = run.get("qk_prologue", run.get("wan_qk_prologue"))
    if recorded is not None:
        return recorded == "stock"
    # Only Wan's was fused before the field existed.
    return family != "wan" or run.get("date", "") < FUSED_PROLOGUE_SINCE


def step_table(results: List[dict]) -> str:
    """Per model and number of blocks built, every row of every step-benchmark JSON (the newest run by its recorded
    date wins for a row label: a file's name need not sort in time order), each ratio against the dense step measured
    in its own run; then the end-to-end speedup the presets' schedules imply. A shortened model and the full one are
    separate tables: their step times and peak memory do not compare."""
    from .bench import implied_e2e

    by_model = step_rows_by_model(results)
    lines = []
    for (model, _), rows in by_model.items():
        any_run = next(iter(rows.values()))[1]
        dev = any_run.get("env", {}).get("device", "?")
        lines.append(f"**{model}** on {dev}: {any_run['layers_timed']} of {any_run['layers_full_model']} blocks "
                     f"built, {any_run['cfg_calls_per_step']} transformer call(s) per step, every layer sparse. "
                     "Ratio = the same run's dense step / this step.\n")
        lines.append("| row | what | backend | density | step (s) | × dense (same run) | ÷ yardstick | peak GiB "
                     "(dense) | file |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        yard = rows.get("fixed-0.25", (None,))[0]
        stock_rows = False
        for label, (e, r) in rows.items():
            stock = not label.startswith("dense") and _stock_qk_prologue(r)
            stock_rows = stock_rows or stock
            dense_peak = r["results"]["dense"].get("peak_gib")
            ratio = e.get("ratio_vs_dense", 1.0 if label == "dense" else None)
            vs_yard = ratio / yard["ratio_vs_dense"] if (yard and ratio) else None
            peak = f"{e['peak_gib']:.2f} ({dense_peak:.2f})" if e.get("peak_gib") and dense_peak else "—"
            lines.append(f"| {label}{' †' if stock else ''} | {_step_row_note(label, e)} | "
                         f"{e.get('backend', '—') or '—'} | "
                         f"{_fmt(e.get('mean_density'))} | {e['step_s']:.3f} | {_fmt(ratio)} | {_fmt(vs_yard)} | "
                         f"{peak} | `{os.path.basename(r['_path'])}` |")
        family = _step_family(any_run)
        if stock_rows:
            lines.append("\n† measured before the fused q/k prologue (`kernels.qk_norm_rope`), with Diffusers' "
                         f"QK-norm and RoPE: {STOCK_PROLOGUE_COST[family]}. Where the yardstick row is newer than "
                         "a † row, its ÷ yardstick understates that row.")
        ratios = {label: e["ratio_vs_dense"] for label, (e, _) in rows.items() if "ratio_vs_dense" in e}
        cells = []
        for method, e in implied_e2e(family, any_run["layers_full_model"], ratios).items():
            stale = " — semantic planning before the fix" if method == "semantic" and (
                "before-planning-fix" in rows[e["row"]][1]["_path"]) else ""
            on_fa4 = f", dense on FA4 {e['dense_ratio']:.2f}×" if e.get("dense_ratio", 1.0) != 1.0 else ""
            cells.append(f"{method} ({e['row']}{stale}) {e['e2e_implied']:.2f}× (dense fraction "
                         f"{e['dense_fraction']:.3f}{on_fa4})")
        lines.append("\nEnd to end at the preset's schedule, 1 / (f / d + (1 − f) / r), d = the dense steps' ratio "
                     "(1, or the fa4-full row's where a preset runs them on FA4): " + "; ".join(cells) + ".\n")
    return "\n".join(lines) if lines else "_no step results yet_"


# Kernel name fragments -> what a step's GPU time went to (`bench step --profile`); the first that matches wins, so
# FlashAttention-4's CuTe kernel counts as attention before "cutlass" counts it as a matmul.
STEP_KERNEL_KINDS = (
    ("attention", ("flash", "_attn_fwd", "sdpa", "fmha")),
    ("matmuls", ("nvjet", "gemm", "cutlass")),
    # The permutation's passes: torch's gather / scatter_, or since session 19 our Triton copy (`kernels.permute`).
    ("gathers", ("_scatter_gather", "_permute_rows")),
    ("k-means assign", ("_assign_kernel",)),
)


def step_kernel_split(profile: dict) -> Dict[str, float]:
    """GPU ms per step of a `bench step --profile` row by kind; ``rest`` holds what no kind names and every kernel
    outside the profile's top list."""
    split = {kind: 0.0 for kind, _ in STEP_KERNEL_KINDS}
    for kernel in profile["kernels"]:
        name = kernel["name"].lower()
        kind = next((kind for kind, frags in STEP_KERNEL_KINDS if any(f.lower() in name for f in frags)), None)
        if kind:
            split[kind] += kernel["ms"]
    split["rest"] = profile["busy_ms"] - sum(split.values())
    return split


def step_profile_table(results: List[dict]) -> str:
    """Where each profiled step row's GPU time goes (`bench step --profile`), the yardstick from the same run."""
    lines = ["| model (blocks) | row | density | step (s) | ÷ yardstick (same run) | GPU busy (ms) | "
             + " | ".join(kind for kind, _ in STEP_KERNEL_KINDS) + " | rest | file |",
             "|---|---|---|---|---|---|" + "---|" * (len(STEP_KERNEL_KINDS) + 2)]
    for run in sorted(results, key=lambda r: (r.get("model", ""), r.get("date", ""))):
        if run.get("benchmark") != "step":
            continue
        rows = run["results"]
        yard = rows.get("fixed-0.25", {}).get("ratio_vs_dense")
        for label, e in rows.items():
            if "gpu_kernels" not in e:
                continue
            split = step_kernel_split(e["gpu_kernels"])
            ratio = e.get("ratio_vs_dense", 1.0 if label == "dense" else None)
            cells = " | ".join(f"{split[kind]:.0f}" for kind in [k for k, _ in STEP_KERNEL_KINDS] + ["rest"])
            lines.append(f"| {run['model']} ({run['layers_timed']}) | {label} | {_fmt(e.get('mean_density', 1.0))} | "
                         f"{e['step_s']:.3f} | {_fmt(ratio / yard if ratio and yard else None)} | "
                         f"{e['gpu_kernels']['busy_ms']:.0f} | {cells} | `{os.path.basename(run['_path'])}` |")
    return "\n".join(lines) if len(lines) > 2 else "_no profiled step runs yet_"


TRAINED_MODELS = ("tiny", "small")
# The commands that write each model's JSON (the README's hint when one is missing); small is a GPU run.
QUALITY_COMMANDS = {"tiny": "python -m dit_sparse.eval.quality --model tiny",
                    "small": "python -m dit_sparse.eval.quality --model small --device cuda"}
ORACLE_COMMANDS = {"tiny": "python -m dit_sparse.eval.oracle --model tiny",
                   "small": "python -m dit_sparse.eval.oracle --model small --device cuda"}
GAIN_HEADER = "gain vs oracle (captured attention)"
GAIN_SENTENCE = (
    "Gain = (err_random − err) / (err_random − err_oracle) of the attention output's relative L2 error against dense "
    "attention, where the oracle keeps each query block's key blocks of most dense attention mass and the random "
    "layout keeps random blocks, both at the method's density: 0 = no better than random, 1 = as good as the oracle, "
    "> 1 = better than the raster-block oracle (permuted layouts can be)."
)


def _read_json(path: str) -> Optional[dict]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _missing(kind: str, model: str, results_dir: str, command: str) -> str:
    path = os.path.join(results_dir, f"{kind}-{model}.json")
    return f"_no {kind} results for `{model}` yet: `{command}` writes `{path}`_"


def _oracle_row(summary: List[dict], name: str) -> Optional[dict]:
    """The oracle summary row of the quality row ``name``: ``radial`` -> (radial, preset), ``radial@0.25`` ->
    (radial, d=0.25)."""
    method, _, target = name.partition("@")
    for s in summary:
        if s.get("method") != method:
            continue
        setting = s.get("setting", "")
        if not target and setting == "preset":
            return s
        if target and setting.startswith("d="):
            try:
                if abs(float(setting[2:]) - float(target)) < 1e-9:
                    return s
            except ValueError:
                continue
    return None


def _gain_cell(row: Optional[dict]) -> str:
    if row is None:
        return "—"
    gain = row.get("gain_of_means", row.get("gain"))
    return _fmt(float(gain)) if gain is not None else "—"


def _add_column(table: str, header: str, cells: List[str]) -> str:
    """``table`` (a markdown table) with one more column: ``header`` and one cell per data row."""
    lines = table.split("\n")
    if len(lines) != len(cells) + 2:
        raise ValueError(f"table has {len(lines) - 2} rows, got {len(cells)} cells")
    lines[0] += f" {header} |"
    lines[1] += "---|"
    lines[2:] = [f"{line} {cell} |" for line, cell in zip(lines[2:], cells)]
    return "\n".join(lines)


def quality_with_gains(results: Dict[str, dict], summary: Optional[List[dict]]) -> str:
    """`quality.markdown_table` plus the oracle-relative gain of each method row (preset or matched density), taken
    from the oracle summary row of the same method and setting; "—" where there is none."""
    from .quality import markdown_table

    # The rows markdown_table writes, in its order: every method row (not dense, not the random baseline).
    names = [n for n in results if n != "dense" and not n.startswith("random@")]
    cells = [_gain_cell(_oracle_row(summary or [], n)) for n in names]
    return _add_column(markdown_table(results), GAIN_HEADER, cells)


def _size_line(model: str, settings: Optional[dict]) -> str:
    """``frames×height×width, N tokens, S steps`` of a run: its settings where given, else the model preset's (the
    evaluators' defaults)."""
    settings = settings or {}
    try:
        from ..pipelines.presets import PRESETS

        preset = PRESETS.get(model)
    except ImportError:  # pragma: no cover
        preset = None

    def pick(key):
        return settings.get(key) or (getattr(preset, key, None) if preset is not None else None)

    frames, height, width = pick("frames"), pick("height"), pick("width")
    # quality: "steps" is the run's step count; oracle: "num_inference_steps" (its "steps" are the captured ones).
    steps = settings.get("num_inference_steps") or settings.get("steps")
    if not isinstance(steps, int):
        steps = getattr(preset, "steps", None)
    known = None not in (frames, height, width)
    # Wan: 4x temporal and 8x spatial VAE compression, 2x2 patches.
    tokens = ((frames - 1) // 4 + 1) * (height // 16) * (width // 16) if known else settings.get("tokens")
    parts = [f"{frames}×{height}×{width}" if known else "size ?"]
    if tokens:
        parts.append(f"{tokens:,} tokens")
    if steps:
        parts.append(f"{steps} steps")
    return ", ".join(parts)


def trained_quality_section(results_dir: str) -> str:
    """Per trained model (``tiny``, ``small``): the video-quality table of ``quality-<model>.json`` with each method
    row's oracle-relative gain from ``oracle-<model>.json``, and that oracle summary table; a hint line with the
    producing command for each JSON that is missing."""
    from .oracle import markdown_table as oracle_table

    parts = []
    for model in TRAINED_MODELS:
        quality = _read_json(os.path.join(results_dir, f"quality-{model}.json"))
        oracle = _read_json(os.path.join(results_dir, f"oracle-{model}.json"))
        heading = quality if quality is not None else oracle
        parts.append(f"### {model}: {_size_line(model, (heading or {}).get('settings'))}\n")
        if quality is not None and "results" in quality:
            prompts = quality.get("prompts")
            device = quality.get("device") or (quality.get("settings") or {}).get("device", "?")
            info = [f"device {device}"]
            if prompts:
                info.append(f"{len(prompts)} prompt{'s' if len(prompts) != 1 else ''}")
            info.append(f"commit `{(quality.get('commit') or '?')[:10]}`")
            parts.append("Video quality against dense (PSNR / SSIM per frame, same prompts and seeds): "
                         + ", ".join(info) + f"; `{quality.get('command', QUALITY_COMMANDS[model]).strip()}`\n")
            parts.append(quality_with_gains(quality["results"], (oracle or {}).get("summary")))
        else:
            parts.append(_missing("quality", model, results_dir, QUALITY_COMMANDS[model]))
        parts.append("")
        if oracle is not None and "summary" in oracle:
            o_set = oracle.get("settings", {}) or {}
            command = oracle.get("command", ORACLE_COMMANDS[model]).strip()
            parts.append(f"Oracle-relative fidelity on attention captured from a dense run "
                         f"({_size_line(model, o_set)}; layers "
                         f"{o_set.get('layers', '?')}, steps {o_set.get('steps', '?')}, block "
                         f"{o_set.get('block_size', '?')}): device {o_set.get('device', '?')}, commit "
                         f"`{(oracle.get('commit') or '?')[:10]}`; `{command}`\n")
            parts.append(GAIN_SENTENCE + "\n")
            parts.append(oracle_table(oracle["summary"]))
        else:
            parts.append(_missing("oracle", model, results_dir, ORACLE_COMMANDS[model]))
        parts.append("")
    return "\n".join(parts)


def fidelity_section(results_dir: str) -> str:
    """The synthetic attention-fidelity tables written by ``python -m dit_sparse.eval.fidelity --out ...``."""
    from .fidelity import markdown_table

    parts = []
    # The main table first, variants (e.g. the 2-D radial window) after it.
    paths = sorted(glob.glob(os.path.join(results_dir, "fidelity*.json")), key=lambda p: ("synthetic" not in p, p))
    for path in paths:
        data = json.loads(Path(path).read_text())
        settings = data.get("settings", {})
        parts.append(f"`{data.get('command', 'python -m dit_sparse.eval.fidelity')}` ({Path(path).name}; "
                     f"grid {settings.get('geometry', '?')}, {settings.get('heads', '?')} heads, block "
                     f"{settings.get('block_size', '?')})\n")
        parts.append(markdown_table(data["rows"]))
        parts.append("")
    return "\n".join(parts) if parts else "_no fidelity results yet_"


RADIAL_GRIDS = {
    "Wan 480p 81f (21×30×52)": ((21, 30, 52), "wan"),
    "Wan 720p 81f (21×45×80)": ((21, 45, 80), "wan"),
    "HunyuanVideo 720p 129f (33×45×80)": ((33, 45, 80), "hunyuan_video"),
}


def radial_table(block: int = 128) -> str:
    """Densities of the radial mask, computed (not typed) for the models' real token grids."""
    from ..geometry import VideoGeometry
    from ..patterns.radial import MODEL_DEFAULT_DECAY, radial_density

    lines = [f"Block {block}×{block}; decay = the model default (Wan 0.2, HunyuanVideo 0.95); sink on for Wan.\n",
             "| token grid | tokens | raster (default) | 2-D window | decay 0.5, raster | decay 1.0, raster |",
             "|---|---|---|---|---|---|"]
    for name, (grid, model) in RADIAL_GRIDS.items():
        g = VideoGeometry(*grid, model=model)
        sink = model == "wan"
        cells = [radial_density(g, block, decay=MODEL_DEFAULT_DECAY[model], sink=sink, spatial=sp)
                 for sp in ("raster", "2d")]
        cells += [radial_density(g, block, decay=d, sink=sink) for d in (0.5, 1.0)]
        lines.append(f"| {name} | {g.num_tokens} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------- plots
def plot_layout(layout, batch: int = 0, head: int = 0, path: Optional[str] = None, title: Optional[str] = None):
    """Draws the block mask of one (batch, head) of a ``BlockLayout``; returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mask = layout.to_block_mask()[min(batch, layout.batch_size - 1), min(head, layout.num_heads - 1)]
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.imshow(mask.cpu().numpy(), cmap="Blues", interpolation="nearest", vmin=0, vmax=1)
    ax.set_xlabel("key block")
    ax.set_ylabel("query block")
    ax.set_title(title or f"density {float(mask.float().mean()):.2f}")
    fig.tight_layout()
    if path:
        fig.savefig(path)
    return fig


def plot_kernel_speed(results: List[dict], path: str) -> Optional[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = _kernel_runs(results, "kernel")
    if not runs:
        return None
    r = runs[-1]
    shapes = list(r["results"])
    fig, axes = plt.subplots(1, len(shapes), figsize=(5 * len(shapes), 4), squeeze=False)
    for ax, shape in zip(axes[0], shapes):
        e = r["results"][shape]
        for backend, rows in e["sparse"].items():
            pts = [(t["density"], t["effective_tflops"]) for t in rows.values() if "effective_tflops" in t]
            if pts:
                ax.plot(*zip(*sorted(pts)), marker="o", label=backend)
        for name, t in e["dense"].items():
            if "tflops" in t:
                ax.axhline(t["tflops"], linestyle="--", color="gray" if "cudnn" in name else "black", label=name)
        ax.set_title(shape)
        ax.set_xlabel("density")
        ax.set_ylabel("effective TFLOP/s")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_e2e(results: List[dict], path: str) -> Optional[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = _e2e_runs(results)
    if not runs:
        return None
    labels, speed, bound = [], [], []
    for r in runs:
        for m, e in r["runs"].items():
            # Rows that compiled in their timed run time the compiler too: the table marks them, the plot omits them.
            if m == "dense" or "speedup" not in e or e.get("graphs_compiled_in_timed_run"):
                continue
            labels.append(f"{r['model']}{' compiled' if r.get('compile') else ''}: {m}")
            speed.append(e["speedup"])
            bound.append(0.0 if e.get("config", {}).get("fast_dense") else e.get("amdahl_at_density") or 0.0)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(labels) + 2), 5))
    xs = range(len(labels))
    if any(bound):
        ax.bar([x - 0.2 for x in xs], speed, width=0.4, label="measured speedup")
        ax.bar([x + 0.2 for x in xs], bound, width=0.4, label="Amdahl at achieved density")
    else:  # every run's preset has fast_dense: the bounds model none of them
        ax.bar(list(xs), speed, width=0.6, label="measured speedup vs Diffusers' dense (eager)")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=7, rotation=60, ha="right")
    ax.set_ylabel("× dense")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path


# ---------------------------------------------------------------------------------------------------------- README
def _step_row_for(config: dict, rows: Dict[str, tuple]) -> Optional[str]:
    """The step row that runs what a quality row ran: its method, and draft's density as Wan's preset plans it (every
    4th step; on small that gave the PSNR of planning every step)."""
    from .bench import draft_row_labels

    method = config.get("method")
    labels = draft_row_labels(float(config.get("density", 0.25)), 4) if method == "draft" else (method,)
    return next((x for x in labels if x in rows), None)


def schedule_tradeoff_section(results: List[dict], results_dir: str, model: str = "wan1.3b-480p") -> str:
    """Quality on the trained small model against the end-to-end speedup on Wan-1.3B 480p that each schedule implies
    (dense steps, dense layers, density), from ``quality-small-dense-steps.json`` and the newest step rows. Rows no
    other row beats on both are marked."""
    quality = _read_json(os.path.join(results_dir, "quality-small-dense-steps.json"))
    # the full model's rows (a shortened model's ratios differ)
    full = [rows for (name, built), rows in step_rows_by_model(results).items()
            if name == model and built == next(iter(rows.values()))[1].get("layers_full_model")]
    rows = full[0] if full else {}
    if not quality or not rows:
        return "_no schedule trade-off yet: `bash bench/gpu_session7c.sh step` and `... quality` write it_"
    table = []
    for label, q in quality["results"].items():
        config = q.get("config")
        if not config:
            continue
        step = _step_row_for(config, rows)
        if step is None:
            continue
        entry, run = rows[step]
        r = entry["ratio_vs_dense"]
        ds = float(config.get("dense_steps", 0.0))
        f = ds + (1 - ds) * config.get("dense_layers", 0) / run["layers_full_model"]
        table.append((label, q, config, ds, step, r, 1.0 / (f + (1 - f) / r)))
    lines = [
        f"Trained small model, {quality['settings']['steps']} steps, {quality['settings']['prompts']} prompts "
        f"(`quality-small-dense-steps.json`, commit `{quality['commit'][:10]}`, planned every step; draft's layouts "
        "planned every 4th step gave the same PSNR on small); "
        f"per-step ratio of {model} from the step benchmark's row named in the table; end to end implied "
        "1 / (f + (1 − f) / r), f = dense steps + the dense layer's share of the sparse steps. ★: no other row has "
        "both a higher PSNR and a higher implied speedup.\n",
        f"| setting | density (small) | dense steps | PSNR vs dense (dB) | SSIM | {model} row | × dense per step | "
        "end to end implied |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, q, config, ds, step, r, e2e in sorted(table, key=lambda t: -t[6]):
        best = not any(o[1]["psnr"] > q["psnr"] and o[6] > e2e for o in table)
        lines.append(f"| {'★ ' if best else ''}{label} | {q['density']:.2f} | {ds:g} | {q['psnr']:.2f} | "
                     f"{q['ssim']:.3f} | {step} | {r:.2f} | {e2e:.2f}× |")
    return "\n".join(lines)


# The quality runs of semantic's piece shapes and cluster sizes on the trained small model, at its native size and at
# 4x the tokens (`bench/gpu_session15.sh qualc` and the 768p run of the session-15 note).
SEMANTIC_PIECE_RUNS = ("quality-small-semantic-tiles.json", "quality-small-768p-semantic-tiles.json")


def semantic_pieces_section(results_dir: str) -> str:
    """Semantic's rows of each `SEMANTIC_PIECE_RUNS` file side by side: PSNR against dense video (density), with the
    piece shape and cluster count each row ran."""
    runs = [(name, _read_json(os.path.join(results_dir, name))) for name in SEMANTIC_PIECE_RUNS]
    runs = [(name, run) for name, run in runs if run]
    if not runs:
        return "_no semantic piece runs yet_"
    labels = list(dict.fromkeys(label for _, run in runs for label in run["results"] if label != "dense"))
    head = " | ".join(f"{_size_line('small', run.get('settings'))}, {len(run.get('prompts') or [])} prompt(s): PSNR "
                      f"(density), `{name}`" for name, run in runs)
    lines = [f"| row | query / key pieces, clusters | {head} |", "|---" * (2 + len(runs)) + "|"]
    for label in labels:
        cfg = next((run["results"][label].get("config") for _, run in runs if label in run["results"]), {}) or {}
        kv_block = cfg.get("kv_block_size") or cfg.get("block_size")
        shape = f"<= {cfg.get('block_size')} / <= {kv_block}, " + (
            f"at most {cfg.get('kv_clusters')} clusters of >= {cfg['min_cluster_tokens']} tokens on average"
            if cfg.get("min_cluster_tokens", 16) > 16 else f"{cfg.get('kv_clusters')} clusters")
        cells = []
        for _, run in runs:
            row = run["results"].get(label)
            cells.append(f"{row['psnr']:.2f} dB ({row['density']:.2f})" if row and "psnr" in row else "—")
        lines.append(f"| {'preset' if label == 'semantic' else label} | {shape} | {' | '.join(cells)} |")
    return "\n".join(lines)


# Semantic as fixed layouts that FlashAttention-4 runs on full tiles (issue #13), on small at 768x1280: what each row
# ran and its video PSNR against dense. Options these runs had that were later removed (clusters="rounded",
# estimate="clusters", estimate="centroids" with joint clusters) are named as the run's JSON records them.
SEMANTIC_WHOLE_TILE_RUNS = (
    "quality-small-768p-semantic-rounded.json", "quality-small-768p-semantic-cover.json",
    "quality-small-768p-semantic-cover-clusters.json", "quality-small-768p-semantic-packed.json",
    "quality-small-768p-semantic-packed-kept-order.json",
)
# The options that tell these rows apart, shown where a row's config differs from SemanticConfig's defaults.
_WHOLE_TILE_OPTIONS = ("clusters", "estimate", "fixed_blocks", "cluster_order", "keep_cluster_order", "pack_pieces",
                       "block_size", "kv_block_size", "top_p")


def semantic_whole_tiles_section(results_dir: str) -> str:
    """One line per row of each `SEMANTIC_WHOLE_TILE_RUNS` file: what ran (the options that differ from the defaults;
    the preset's 256 clusters everywhere), density, PSNR and SSIM against dense video."""
    from ..config import SemanticConfig

    defaults = {f: getattr(SemanticConfig(), f, None) for f in _WHOLE_TILE_OPTIONS}
    lines = ["| file | row | options (vs defaults) | density | PSNR vs dense | SSIM |", "|---|---|---|---|---|---|"]
    for name in SEMANTIC_WHOLE_TILE_RUNS:
        run = _read_json(os.path.join(results_dir, name))
        for label, row in (run or {}).get("results", {}).items():
            if "psnr" not in row:
                continue
            cfg = row.get("config") or {}
            opts = ", ".join(f"{f}={cfg[f]!r}" for f in _WHOLE_TILE_OPTIONS if f in cfg and cfg[f] != defaults[f])
            if cfg.get("pack_pieces") and cfg.get("cluster_order") == "similarity" and "keep_cluster_order" not in cfg:
                # Packed runs from before keep_cluster_order (session 18) recomputed the order in every plan.
                opts += " (similarity order in every plan)"
            lines.append(f"| `{name}` | {'preset' if label == 'semantic' else label} | {opts or '—'} | "
                         f"{row['density']:.2f} | {row['psnr']:.2f} dB | {row.get('ssim', float('nan')):.3f} |")
    return "\n".join(lines) if len(lines) > 2 else "_no whole-tile semantic runs yet_"


def replace_section(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- BEGIN:{name} -->", f"<!-- END:{name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        return head + block + tail
    return text.rstrip() + "\n\n" + block + "\n"


def update_readme(readme: str, results_dir: str, docs: str) -> Dict[str, str]:
    results = load_results(results_dir)
    Path(docs).mkdir(parents=True, exist_ok=True)
    sections = {"kernel": kernel_table(results), "kernel-tile": kernel_table(results, "kernel-tile"),
                "e2e": e2e_table(results), "pattern": pattern_table(results),
                "step": step_table(results), "step-profile": step_profile_table(results),
                "radial": radial_table(), "fidelity": fidelity_section(results_dir),
                "quality": trained_quality_section(results_dir),
                "semantic-pieces": semantic_pieces_section(results_dir),
                "semantic-whole-tiles": semantic_whole_tiles_section(results_dir),
                "schedule-tradeoff": schedule_tradeoff_section(results, results_dir)}
    img = plot_kernel_speed(results, os.path.join(docs, "kernel_speed.png"))
    if img:
        sections["kernel"] += f"\n![speed vs density]({img})\n"
    img = plot_e2e(results, os.path.join(docs, "e2e_speedup.png"))
    if img:
        sections["e2e"] += f"\n![speedup vs Amdahl]({img})\n"
    path = Path(readme)
    text = path.read_text() if path.exists() else ""
    for name, body in sections.items():
        text = replace_section(text, name, body)
    path.write_text(text)
    return sections


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m dit_sparse.eval.report")
    p.add_argument("--results", default="bench/results")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--docs", default="docs")
    args = p.parse_args(argv)
    sections = update_readme(args.readme, args.results, args.docs)
    for name, body in sections.items():
        print(f"## {name}\n{body}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
