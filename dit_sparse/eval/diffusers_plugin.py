"""A pytest plugin that runs Diffusers' own tests with our processors inside every Wan / HunyuanVideo transformer.

Load it with ``pytest -p dit_sparse.eval.diffusers_plugin`` (``bench/diffusers_tests.sh`` does, on Diffusers' test
files for the installed version). For the test session only, it wraps ``__init__`` of ``WanTransformer3DModel`` and
``HunyuanVideoTransformer3DModel`` so that every instance a test builds (directly, through ``from_pretrained`` or
through a pipeline's dummy components) leaves ``__init__`` with ``dit_sparse.apply_sparse_attention(model, CONFIG)``
applied; the original ``__init__`` is put back at the end of the session (``pytest_unconfigure``). Nothing else in
Diffusers is touched.

``CONFIG`` comes from ``DIT_SPARSE_DIFFUSERS_CONFIG``; every choice computes exactly what dense attention computes, so
Diffusers' numerical assertions must keep holding:

- ``dense`` (default): ``DenseConfig(dense_steps=0, dense_layers=0)``, our processors on their dense path.
- ``full``: ``DraftConfig(density=1.0, ...)``, the sparse path (pattern, layout, block-sparse kernel, LSE merge of
  HunyuanVideo's text tokens) at a full budget.
- ``radial-full``: ``RadialConfig(decay=16.0, ...)``, the largest decay (every block pair the windows can reach).

Diffusers' fast CPU tests compare a model mostly with itself (determinism, save/load, dtypes, gradient
checkpointing), so they alone would pass with a sparse config that changes the output. The plugin therefore also
runs the stock Diffusers processor (``WanAttnProcessor``, ``HunyuanVideoAttnProcessor2_0``) next to every call of ours
on the same inputs and fails the call when the outputs differ (fp32: rtol = atol = 1e-5; fp16/bf16: 2e-2);
``DIT_SPARSE_DIFFUSERS_CHECK=0`` turns this off.

The sparse choices use ``dense_steps=0, dense_layers=0`` and ``block_size=16`` (``DIT_SPARSE_DIFFUSERS_BLOCK_SIZE``
overrides it) so that the tests' tiny latents (a few hundred tokens) really take the sparse path. The terminal summary
reports how many transformers got our processors and how many attention calls went through the dense and the sparse
path, so a run in which our code never ran is visible.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Dict

import pytest

ENV = "DIT_SPARSE_DIFFUSERS_CONFIG"
BLOCK_ENV = "DIT_SPARSE_DIFFUSERS_BLOCK_SIZE"
CHECK_ENV = "DIT_SPARSE_DIFFUSERS_CHECK"
TARGETS = ("WanTransformer3DModel", "HunyuanVideoTransformer3DModel")


def _configs(block_size: int) -> Dict[str, Callable]:
    from dit_sparse import DenseConfig, DraftConfig, RadialConfig

    common = dict(dense_steps=0, dense_layers=0)
    return {
        "dense": lambda: DenseConfig(**common),
        "full": lambda: DraftConfig(density=1.0, block_size=block_size, **common),
        "radial-full": lambda: RadialConfig(decay=16.0, block_size=block_size, **common),
    }


def config_from_env(environ=None):
    """The config named by ``DIT_SPARSE_DIFFUSERS_CONFIG`` (``dense`` when unset)."""
    environ = os.environ if environ is None else environ
    name = environ.get(ENV, "dense").strip().lower() or "dense"
    block_size = int(environ.get(BLOCK_ENV, "16"))
    configs = _configs(block_size)
    if name not in configs:
        raise ValueError(f"{ENV}={name!r} is not known; allowed: {', '.join(configs)}")
    return name, configs[name]()


class Installer:
    """Wraps the target classes' ``__init__`` (until ``undo``) and counts what our processors did."""

    def __init__(self, config, check: bool = True):
        self.config = config
        self.check = check
        self.models = 0
        self.dense_calls = 0
        self.sparse_calls = 0
        self.checked_calls = 0
        self.max_abs_diff = 0.0
        self._mp = pytest.MonkeyPatch()

    def install(self) -> None:
        import diffusers

        from dit_sparse.schedule import SparseState

        for name in TARGETS:
            cls = getattr(diffusers, name)
            self._mp.setattr(cls, "__init__", self._wrap(cls, cls.__init__))
        record = SparseState.record

        @functools.wraps(record)
        def counting_record(state, name, dense, density=None):
            if dense:
                self.dense_calls += 1
            else:
                self.sparse_calls += 1
            return record(state, name, dense, density)

        self._mp.setattr(SparseState, "record", counting_record)
        if self.check:
            self._install_check()

    def _install_check(self) -> None:
        import torch
        from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoAttnProcessor2_0
        from diffusers.models.transformers.transformer_wan import WanAttnProcessor

        from dit_sparse.processors.hunyuan_video import HunyuanVideoSparseAttnProcessor
        from dit_sparse.processors.wan import WanSparseAttnProcessor

        installer = self
        for ours, stock_cls in ((WanSparseAttnProcessor, WanAttnProcessor),
                                (HunyuanVideoSparseAttnProcessor, HunyuanVideoAttnProcessor2_0)):
            call = ours.__call__

            def checked(proc, attn, *args, _call=call, _stock_cls=stock_cls, **kwargs):
                out = _call(proc, attn, *args, **kwargs)
                if torch.compiler.is_compiling():
                    return out
                stock = _stock_cls()
                stock._attention_backend = proc._attention_backend
                stock._parallel_config = proc._parallel_config
                with torch.no_grad():
                    expected = stock(attn, *args, **kwargs)
                got = out if isinstance(out, tuple) else (out,)
                expected = expected if isinstance(expected, tuple) else (expected,)
                for g, e in zip(got, expected):
                    tol = 1e-5 if g.dtype == torch.float32 else 2e-2
                    g = g.detach()
                    torch.testing.assert_close(g, e, rtol=tol, atol=tol, msg=lambda m: (
                        f"dit_sparse ({installer.config!r}) differs from stock {_stock_cls.__name__}: {m}"))
                    installer.max_abs_diff = max(installer.max_abs_diff, float((g.float() - e.float()).abs().max()))
                installer.checked_calls += 1
                return out

            self._mp.setattr(ours, "__call__", checked)

    def _wrap(self, cls, init):
        installer = self

        # functools.wraps keeps __wrapped__: ConfigMixin reads the signature of __init__ through it.
        @functools.wraps(init)
        def __init__(model, *args, **kwargs):
            init(model, *args, **kwargs)
            if type(model) is cls:  # a subclass gets ours when its own __init__ is done
                import dit_sparse

                dit_sparse.apply_sparse_attention(model, installer.config)
                installer.models += 1

        return __init__

    def undo(self) -> None:
        self._mp.undo()


_INSTALLER: Installer | None = None


def pytest_configure(config):
    global _INSTALLER
    name, sparse_config = config_from_env()
    check = os.environ.get(CHECK_ENV, "1").strip().lower() not in ("0", "false", "no", "off")
    _INSTALLER = Installer(sparse_config, check=check)
    _INSTALLER.name = name
    _INSTALLER.install()


def pytest_unconfigure(config):
    global _INSTALLER
    if _INSTALLER is not None:
        _INSTALLER.undo()
        _INSTALLER = None


def pytest_report_header(config):
    if _INSTALLER is not None:
        return f"dit_sparse diffusers plugin: {ENV}={_INSTALLER.name} -> {_INSTALLER.config!r}"
    return None


def pytest_terminal_summary(terminalreporter):
    if _INSTALLER is not None:
        terminalreporter.write_line(
            f"dit_sparse ({_INSTALLER.name}): processors installed in {_INSTALLER.models} transformers; "
            f"attention calls through them: {_INSTALLER.dense_calls} dense, {_INSTALLER.sparse_calls} sparse; "
            f"compared with stock: {_INSTALLER.checked_calls} calls"
            + (f", max |diff| {_INSTALLER.max_abs_diff:.3g}" if _INSTALLER.checked_calls else "")
        )
