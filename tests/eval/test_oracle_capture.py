"""The oracle's capture wrapper stands in for a processor's core: whatever the processor asks of it besides the call
is the wrapped core's (on CUDA, Wan's processor asks ``runs_own_kernel`` before building q and k)."""

from types import SimpleNamespace

from dit_sparse.eval.oracle import _CaptureCore


def test_capture_core_delegates_what_it_does_not_record():
    core = SimpleNamespace(runs_own_kernel=lambda query, video_len=None: "asked", layer=3, state=None)
    wrapped = _CaptureCore(core, layers=[1], steps=[0], branches=[0], store=[], dtype=None)
    assert wrapped.runs_own_kernel(None) == "asked" and wrapped.layer == 3
