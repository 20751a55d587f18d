"""Gradio demo: one prompt, dense and sparse side by side, with wall times, speedup, density, PSNR and a block layout.

    dit-sparse demo --model tiny                     # offline, CPU, random tiny Wan
    dit-sparse demo --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --port 7860
    dit-sparse demo --model black-forest-labs/FLUX.1-dev    # an image model: the outputs are images
    python -m dit_sparse.pipelines.demo --model tiny

Needs ``pip install 'dit-sparse[demo]'`` (gradio, matplotlib). The app makes no network requests of its own: analytics
are off, the theme uses system fonts, and ``--share`` (a public gradio.live link) is opt-in.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402

from .generate import (  # noqa: E402
    GenerationError,
    OutOfMemoryError,
    compare,
    default_device,
    load_pipeline,
    make_sparse_config,
    run_density,
    run_pipeline,
    write_output,
)
from .presets import METHODS, check_size, preset_for, resolve_dtype  # noqa: E402

# Components the browser test drives are pinned by elem_id.
ELEM_IDS = {
    "prompt": "prompt",
    "method": "method",
    "generate": "generate",
    "with_dense": "with_dense",
    "dense_video": "dense_video",
    "sparse_video": "sparse_video",
    "dense_image": "dense_image",  # the output components of an image model
    "sparse_image": "sparse_image",
    "timings": "timings",
    "layout_image": "layout_image",
}

# Which sliders belong to which method.
METHOD_SLIDERS = {"decay": ("radial",), "top_p": ("semantic",), "q_clusters": ("semantic",),
                  "kv_clusters": ("semantic",), "density": ("draft",)}


def _theme():
    import gradio as gr

    # System fonts only: the default theme would make the browser fetch web fonts from the internet.
    return gr.themes.Base(
        font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
    )


CSS = """
#dense_video video, #sparse_video video { image-rendering: pixelated; }
#layout_image img { image-rendering: pixelated; }
"""


def plot_layout(layout, *, title: str, head: int = 0, geometry=None, tokens_per_block: Optional[int] = None):
    """Renders one (batch 0, ``head``) block mask of ``layout`` as an RGB image (numpy uint8 [H, W, 3]).

    Args:
        layout (`BlockLayout`): e.g. ``RunResult.layout``.
        title (`str`): the plot title.
        head (`int`): which head to show (clamped to the layout's heads; layouts shared by all heads have one).
        geometry (`VideoGeometry`, *optional*): draws frame boundaries when blocks do not reorder tokens.
        tokens_per_block (`int`, *optional*): block size in tokens for the frame boundary lines.
    """
    mask = layout.to_block_mask()[0, min(head, layout.num_heads - 1)].cpu().numpy()
    fig, ax = _figure()
    ax.imshow(mask, cmap="Blues", vmin=0, vmax=1.25, interpolation="nearest")
    nq, nk = mask.shape
    ax.set_xlabel(f"key block ({nk})")
    ax.set_ylabel(f"query block ({nq})")
    ax.set_title(title, fontsize=9)
    if geometry is not None and tokens_per_block and not layout.has_permutation and not layout.is_variable:
        per_frame = geometry.tokens_per_frame / tokens_per_block
        if per_frame >= 1 and geometry.frames <= 64:
            for f in range(1, geometry.frames):
                pos = f * per_frame - 0.5
                ax.axhline(pos, color="tab:orange", lw=0.4, alpha=0.6)
                ax.axvline(pos, color="tab:orange", lw=0.4, alpha=0.6)
    fig.tight_layout()
    return _render(fig)


def _figure():
    # The object-oriented API with its own Agg canvas: no pyplot global state, safe in Gradio's worker threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _render(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _message_image(text: str) -> np.ndarray:
    fig, ax = _figure()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=10)
    return _render(fig)


def format_timings(
    dense,
    sparse,
    method: str,
    metrics: Optional[Dict[str, float]],
    settings: Dict[str, Any],
    device: str = "cpu",
    kind: str = "video",
) -> str:
    """Markdown with wall times, speedup, density and PSNR/SSIM (``kind`` "image" leaves out the frame count)."""
    summary = sparse.summary or {}
    density, _ = run_density(method, sparse)
    size = f"{settings['width']}x{settings['height']}" + (f", {settings['frames']} frames" if kind == "video" else "")
    lines = [
        f"**{method}** — {size}, {settings['steps']} steps, seed {settings['seed']}",
        "",
        "| run | wall time |",
        "|---|---|",
    ]
    if dense is not None:
        lines.append(f"| dense | {dense.seconds:.2f} s |")
    lines.append(f"| {method} | {sparse.seconds:.2f} s |")
    lines.append("")
    if dense is not None:
        lines.append(f"- **speedup: {dense.seconds / sparse.seconds:.2f}x** (dense / sparse wall time)")
    else:
        lines.append("- speedup: n/a (tick *generate dense too* to compare)")
    dense_calls, calls = summary.get("dense_calls", 0), summary.get("calls", 0)
    lines.append(
        f"- density: {'n/a' if density is None else f'{density:.3f}'} of key blocks in sparse calls; "
        f"{dense_calls} of {calls} self-attention calls "
        f"dense by the schedule; backend: {summary.get('backend') or 'n/a'}"
    )
    if metrics is not None:
        psnr, ssim = metrics["psnr"], metrics["ssim"]
        psnr_text = "inf (identical)" if psnr == float("inf") else f"{psnr:.2f} dB"
        lines.append(f"- PSNR vs dense: {psnr_text}, SSIM: {ssim:.4f}")
    if not str(device).startswith("cuda"):
        lines.append(
            "- on a CPU the exact reference kernel runs the sparse blocks, so expect no speedup here: the fast "
            "kernels (FlashAttention-4, Triton, FlexAttention) need a GPU"
        )
    return "\n".join(lines)


class DemoRunner:
    """Holds the pipeline and runs one dense/sparse comparison per click (one at a time)."""

    def __init__(self, model: str = "tiny", device: Optional[str] = None, dtype: Optional[str] = None, pipe=None,
                 out_dir: Optional[str] = None):
        self.preset = preset_for(model)
        self.device = device or default_device()
        self.dtype_name = dtype or (self.preset.dtype if self.device.startswith("cuda") else "float32")
        self.pipe = pipe if pipe is not None else load_pipeline(
            self.preset, device=self.device, dtype=resolve_dtype(self.dtype_name)
        )
        self.out_dir = Path(out_dir or tempfile.mkdtemp(prefix="dit-sparse-demo-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.last_settings: Optional[Dict[str, Any]] = None
        self.num_layers = int(getattr(self.pipe.transformer.config, "num_layers", 1) or 1)

    def options_for(self, method: str, values: Dict[str, Any]) -> Dict[str, Any]:
        options = self.preset.sparse_options(method)
        if method == "dense":
            return options
        for name, methods in METHOD_SLIDERS.items():
            if method in methods and values.get(name) is not None:
                value = values[name]
                options[name] = int(value) if name.endswith("clusters") else float(value)
        if values.get("dense_steps") is not None:
            options["dense_steps"] = float(values["dense_steps"])
        if values.get("dense_layers") is not None:
            options["dense_layers"] = int(values["dense_layers"])
        return options

    def run(self, prompt: str, method: str, values: Dict[str, Any], with_dense: bool):
        settings = {
            "prompt": prompt or "",
            "negative_prompt": self.preset.negative_prompt,
            "height": int(values["height"]),
            "width": int(values["width"]),
            # An image model makes one frame whatever the (hidden) frames slider holds.
            "frames": 1 if self.preset.is_image else int(values["frames"]),
            "steps": int(values["steps"]),
            "guidance": float(values.get("guidance", self.preset.guidance)),
            "seed": int(values["seed"]),
        }
        check_size(self.preset, settings["height"], settings["width"], settings["frames"])
        self.last_settings = settings
        config = make_sparse_config(method, self.options_for(method, values))
        with self.lock:
            dense = None
            if with_dense:
                dense = run_pipeline(self.pipe, self.preset, settings, device=self.device)
            sparse = run_pipeline(
                self.pipe, self.preset, settings, config=config, device=self.device, capture_layout=True
            )
        tag = uuid.uuid4().hex[:8]
        suffix = self.preset.suffix
        sparse_path = self.out_dir / f"{tag}_{method}{suffix}"
        write_output(sparse_path, sparse.frames, self.preset, self.preset.fps)
        dense_path, metrics = None, None
        if dense is not None:
            dense_path = self.out_dir / f"{tag}_dense_baseline{suffix}"
            write_output(dense_path, dense.frames, self.preset, self.preset.fps)
            metrics = compare(dense.frames, sparse.frames)
        text = format_timings(dense, sparse, method, metrics, settings, self.device, kind=self.preset.kind)
        return dense_path, sparse_path, text, self.layout_image(sparse, method, config)

    def layout_image(self, result, method: str, config):
        if method == "dense":
            return _message_image("dense: every block is computed")
        if result.layout is None:
            return _message_image("no sparse step in this run\n(all steps or layers were dense)")
        info = result.layout_info or {}
        layer = info.get("layer")
        where = "all sparse layers" if layer is None else f"layer {layer}"
        density = float(result.layout.density())
        geometry = info.get("geometry")
        grid = f", tokens {geometry.frames}x{geometry.height}x{geometry.width}" if geometry is not None else ""
        title = f"{method}: {where}, head 0\nblock {config.block_size} tokens{grid}, density {density:.3f}"
        try:
            return plot_layout(
                result.layout, title=title, geometry=geometry, tokens_per_block=config.block_size
            )
        except Exception as err:  # a plot must never fail the generation
            return _message_image(f"could not plot the layout:\n{type(err).__name__}: {err}")


def build_demo(
    model: str = "tiny",
    device: Optional[str] = None,
    *,
    dtype: Optional[str] = None,
    defaults: Optional[Dict[str, Any]] = None,
    pipe=None,
):
    """The Gradio Blocks app.

    Args:
        model (`str`): ``tiny``, a Hub id or a local pipeline folder (loaded once, here). For an image model
            (FLUX.1-dev, Qwen-Image) the outputs are images and the frames slider is hidden.
        device (`str`, *optional*): default cuda when available.
        dtype (`str`, *optional*): ``bfloat16`` / ``float16`` / ``float32``; default the model's (float32 on CPU).
        defaults (`dict`, *optional*): initial values of the controls: ``prompt``, ``method``, ``steps``, ``frames``,
            ``height``, ``width``, ``seed``, ``with_dense``, ...
        pipe (*optional*): an already-loaded pipeline of ``model`` to reuse.

    Returns:
        `gradio.Blocks`; launch it with ``demo.launch(...)`` (see `launch`).
    """
    import gradio as gr

    runner = DemoRunner(model, device, dtype, pipe=pipe)
    preset = runner.preset
    d = dict(
        # The tiny and small models know only their training captions' words; real models take any prompt.
        prompt=("a red square moves left over a striped background" if preset.name in ("tiny", "small")
                else "A red fox running through fresh snow in a sunny forest, cinematic"),
        method="radial",
        steps=preset.steps,
        frames=preset.frames,
        height=preset.height,
        width=preset.width,
        seed=0,
        guidance=preset.guidance,
        with_dense=True,
    )
    d.update(defaults or {})
    method0 = d["method"]
    rec = {m: preset.sparse_options(m) for m in METHODS}
    max_frames = max(129 if preset.family == "hunyuan_video" else 81, d["frames"])
    max_side = max(1280, d["height"], d["width"]) if preset.model_id != "tiny" else max(256, d["height"], d["width"])

    blocks_kwargs = {} if _launch_takes_theme() else {"theme": _theme(), "css": CSS}
    with gr.Blocks(title="dit-sparse: sparse attention for diffusion transformers", **blocks_kwargs) as demo:
        gr.Markdown(
            f"## dit-sparse — sparse attention for {preset.kind} diffusion transformers\n"
            f"Model: `{preset.model_id}` ({preset.pipeline_class}) on `{runner.device}` ({runner.dtype_name}). "
            "The dense and the sparse run use the same seed; the sparse one swaps Diffusers' self-attention "
            "processors for block-sparse ones."
        )
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", value=d["prompt"], lines=2, elem_id=ELEM_IDS["prompt"], scale=4)
            with gr.Column(scale=1, min_width=200):
                method = gr.Dropdown(
                    choices=list(METHODS), value=method0, label="Method", elem_id=ELEM_IDS["method"]
                )
                with_dense = gr.Checkbox(
                    value=bool(d["with_dense"]), label="generate dense too", elem_id=ELEM_IDS["with_dense"]
                )
                button = gr.Button("Generate", variant="primary", elem_id=ELEM_IDS["generate"])
        with gr.Row():
            decay = gr.Slider(0.05, 2.0, value=rec["radial"].get("decay", 0.2), step=0.05, label="radial: decay",
                              visible=method0 == "radial", elem_id="decay")
            top_p = gr.Slider(0.5, 1.0, value=rec["semantic"].get("top_p", 0.9), step=0.01, label="semantic: top-p",
                              visible=method0 == "semantic", elem_id="top_p")
            q_clusters = gr.Slider(1, 512, value=rec["semantic"].get("q_clusters", 100), step=1,
                                   label="semantic: query clusters", visible=method0 == "semantic",
                                   elem_id="q_clusters")
            kv_clusters = gr.Slider(1, 2048, value=rec["semantic"].get("kv_clusters", 500), step=1,
                                    label="semantic: key clusters", visible=method0 == "semantic",
                                    elem_id="kv_clusters")
            density = gr.Slider(0.02, 1.0, value=rec["draft"].get("density", 0.25), step=0.01,
                                label="draft: density", visible=method0 == "draft", elem_id="density")
        with gr.Accordion("Advanced", open=False):
            with gr.Row():
                steps = gr.Slider(1, 100, value=d["steps"], step=1, label="steps", elem_id="steps")
                # An image model makes one frame: no slider to offer (the value is ignored).
                frames = gr.Slider(1 if preset.is_image else 5, max_frames, value=d["frames"], step=4,
                                   label="frames (4k+1)", elem_id="frames", visible=not preset.is_image)
                seed = gr.Number(value=d["seed"], precision=0, label="seed", elem_id="seed")
            with gr.Row():
                height = gr.Slider(16, max_side, value=d["height"], step=16, label="height", elem_id="height")
                width = gr.Slider(16, max_side, value=d["width"], step=16, label="width", elem_id="width")
                guidance = gr.Slider(1.0, 12.0, value=d["guidance"], step=0.5, label="guidance", elem_id="guidance")
            with gr.Row():
                dense_steps = gr.Slider(0.0, 1.0, value=float(rec[method0].get("dense_steps", 0.25)), step=0.05,
                                        label="dense steps (fraction of steps)", elem_id="dense_steps")
                dense_layers = gr.Slider(0, runner.num_layers, value=int(rec[method0].get("dense_layers", 1)),
                                         step=1, label="dense layers", elem_id="dense_layers")
        with gr.Row(equal_height=True):
            if preset.is_image:
                dense_output = gr.Image(label="dense", elem_id=ELEM_IDS["dense_image"], height=320, type="filepath",
                                        interactive=False)
                sparse_output = gr.Image(label="sparse", elem_id=ELEM_IDS["sparse_image"], height=320,
                                         type="filepath", interactive=False)
            else:
                dense_output = gr.Video(label="dense", elem_id=ELEM_IDS["dense_video"], height=320, format="mp4",
                                        autoplay=True, loop=True)
                sparse_output = gr.Video(label="sparse", elem_id=ELEM_IDS["sparse_video"], height=320, format="mp4",
                                         autoplay=True, loop=True)
        with gr.Row():
            timings = gr.Markdown("Press **Generate**.", elem_id=ELEM_IDS["timings"])
            # The plot's own title names the layer, head and density, so the component label is hidden.
            layout_image = gr.Image(label="block layout", show_label=False, type="numpy", height=320,
                                    elem_id=ELEM_IDS["layout_image"], interactive=False)

        def on_method(m):
            r = rec.get(m, {})
            updates = [gr.update(visible=m in METHOD_SLIDERS[name]) for name in
                       ("decay", "top_p", "q_clusters", "kv_clusters", "density")]
            updates.append(gr.update(value=float(r.get("dense_steps", dense_steps.value))))
            updates.append(gr.update(value=int(r.get("dense_layers", dense_layers.value))))
            return updates

        method.change(on_method, [method], [decay, top_p, q_clusters, kv_clusters, density, dense_steps,
                                            dense_layers])

        def on_generate(prompt_v, method_v, with_dense_v, decay_v, top_p_v, q_v, kv_v, density_v, steps_v,
                        frames_v, seed_v, height_v, width_v, guidance_v, dense_steps_v, dense_layers_v):
            values = dict(decay=decay_v, top_p=top_p_v, q_clusters=q_v, kv_clusters=kv_v, density=density_v,
                          steps=steps_v, frames=frames_v, seed=seed_v or 0, height=height_v, width=width_v,
                          guidance=guidance_v, dense_steps=dense_steps_v, dense_layers=dense_layers_v)
            try:
                dense_path, sparse_path, text, image = runner.run(prompt_v, method_v, values, bool(with_dense_v))
            except (GenerationError, ValueError) as err:
                raise gr.Error(str(err)) from err
            except OutOfMemoryError as err:
                raise gr.Error(
                    "out of GPU memory: lower the resolution or the frame count, or restart the demo on a larger GPU"
                ) from err
            return (str(dense_path) if dense_path else None), str(sparse_path), text, image

        button.click(
            on_generate,
            [prompt, method, with_dense, decay, top_p, q_clusters, kv_clusters, density, steps, frames, seed,
             height, width, guidance, dense_steps, dense_layers],
            [dense_output, sparse_output, timings, layout_image],
            concurrency_limit=1,
        )
    demo._dit_sparse_runner = runner
    return demo


def launch(demo, *, host: str = "127.0.0.1", port: Optional[int] = None, share: bool = False,
           block: bool = True):
    """``demo.queue().launch(...)`` with the settings this app needs (system-font theme, no SSR, outputs allowed).

    With ``block=False`` the server runs in a background thread and this returns at once (``demo.close()`` stops it).
    """
    runner = getattr(demo, "_dit_sparse_runner", None)
    allowed = [str(runner.out_dir)] if runner is not None else None
    kwargs = dict(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=not block,
        inbrowser=False,
        show_error=True,
        allowed_paths=allowed,
        quiet=not block,
    )
    params = _launch_params()
    if "ssr_mode" in params:  # Gradio 5+: server-side rendering would need Node; keep the plain Python server
        kwargs["ssr_mode"] = False
    if "theme" in params:  # Gradio 6 takes theme and css in launch() (Gradio 5 in Blocks(), see build_demo)
        kwargs.update(theme=_theme(), css=CSS)
    return demo.queue(default_concurrency_limit=1).launch(**kwargs)


def _launch_params():
    import inspect

    import gradio as gr

    return inspect.signature(gr.Blocks.launch).parameters


def _launch_takes_theme() -> bool:
    return "theme" in _launch_params()


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", default="tiny", help="tiny (offline, CPU), a Hub id or a local pipeline folder")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve on the network")
    parser.add_argument("--share", action="store_true", help="also create a public gradio.live link (network)")
    parser.add_argument("--device", default=None, help="default: cuda when available")
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"])
    return parser


def run_cli(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        import gradio  # noqa: F401
        import matplotlib  # noqa: F401
    except ImportError as err:
        parser.exit(2, f"{parser.prog}: error: the demo needs gradio and matplotlib: pip install 'dit-sparse[demo]' "
                       f"({err})\n")
    try:
        demo = build_demo(args.model, args.device, dtype=args.dtype)
    except (GenerationError, ValueError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    launch(demo, host=args.host, port=args.port, share=args.share, block=True)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m dit_sparse.pipelines.demo [--model tiny] [--port 7860] [--share]``."""
    parser = argparse.ArgumentParser(prog="python -m dit_sparse.pipelines.demo", description=__doc__.splitlines()[0])
    add_demo_arguments(parser)
    return run_cli(parser.parse_args(argv), parser)


if __name__ == "__main__":
    sys.exit(main())
