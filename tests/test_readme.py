"""The README's Python snippet for the shipped tiny model runs as written (with fewer steps, for time)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_shows_how_to_load_tiny_from_python_and_it_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    snippet = next((b for b in blocks if "build_tiny_pipeline" in b), None)
    assert snippet is not None, "the README must show how to load the tiny model from Python"
    assert "from dit_sparse.pipelines.tiny import build_tiny_pipeline" in snippet
    assert "apply_sparse_attention(pipe, make_config(" in snippet
    assert "num_inference_steps=10" in snippet
    namespace = {}
    exec(compile(snippet.replace("num_inference_steps=10", "num_inference_steps=2"), "README.md", "exec"), namespace)
    assert namespace["video"].shape == (17, 128, 128, 3)
    info = namespace["summary"](namespace["pipe"])
    assert info["sparse_calls"] > 0 and 0 < info["mean_density"] < 1
    assert "sparse_calls" in capsys.readouterr().out
