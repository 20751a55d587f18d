"""`dit-sparse generate`: a fast --help, clear offline errors, JSON-clean reports, honest help texts."""

import json
import subprocess
import sys

import pytest


def test_cli_parser_does_not_import_diffusers():
    # Importing Diffusers takes seconds (tens on a cold disk): the parser and --help must not need it.
    code = (
        "import sys\n"
        "from dit_sparse.cli import build_parser, main\n"
        "build_parser().parse_args(['generate', '--model', 'tiny'])\n"
        "for argv in (['--help'], ['generate', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('diffusers', 'transformers', 'gradio') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-2000:]


def test_help_texts_describe_tiny_truthfully():
    from dit_sparse.pipelines.generate import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "random" not in text  # tiny is a trained model
    assert "64 or 128" not in text and "32 for tiny" in text


class _NoNetwork:
    def head(self, *args, **kwargs):
        raise ConnectionError("[Errno -2] Name or service not known")


@pytest.fixture
def offline_hub(monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants

    from dit_sparse.pipelines import generate

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_session", lambda: _NoNetwork())
    calls = []

    def fake_load(model_id, preset, dtype, **hub):
        calls.append(hub)
        if not hub.get("local_files_only"):  # what from_pretrained says after five retries without network
            raise OSError(f"{model_id} does not appear to have a file named config.json.")
        raise RuntimeError("loaded from the cache")

    monkeypatch.setattr(generate, "_load_wan", fake_load)
    return calls


def test_hub_id_without_network_or_cache_says_so(offline_hub, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    from dit_sparse.pipelines.generate import main

    with pytest.raises(SystemExit) as exc:
        main(["--model", "someone/some-wan-model", "--steps", "1", "--device", "cpu"])
    assert exc.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no network" in err and "no local copy" in err and "--model tiny" in err, err
    assert "config.json" not in err
    assert offline_hub == []  # from_pretrained was not even tried


def test_hub_id_without_network_loads_from_cache_without_retries(offline_hub, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: "/cache/model_index.json")
    from dit_sparse.pipelines.generate import main

    with pytest.raises(SystemExit):
        main(["--model", "someone/some-wan-model", "--steps", "1", "--device", "cpu"])
    assert offline_hub == [{"local_files_only": True}]
    assert "loaded from the cache" in capsys.readouterr().err


def test_report_writes_numbers_or_null_never_strings(tmp_path, capsys):
    from dit_sparse.pipelines.generate import _json_safe, main

    assert _json_safe({"psnr": float("inf"), "x": [float("-inf"), float("nan"), 1.5]}) == {
        "psnr": None, "x": [None, None, 1.5]
    }
    # Dense against dense: identical videos, infinite PSNR.
    report_path = tmp_path / "r.json"
    rc = main([
        "--model", "tiny", "--method", "dense", "--compare-dense", "--steps", "1", "--frames", "5", "--height", "32",
        "--width", "32", "--no-warmup", "--out", str(tmp_path / "d.mp4"), "--report", str(report_path),
    ])
    assert rc == 0
    text = report_path.read_text()
    report = json.loads(text)
    assert '"inf"' not in text and "Infinity" not in text

    def strings(value, path="report"):
        if isinstance(value, dict):
            return [s for k, v in value.items() for s in strings(v, f"{path}.{k}")]
        if isinstance(value, list):
            return [s for i, v in enumerate(value) for s in strings(v, f"{path}[{i}]")]
        return [path] if isinstance(value, str) and value.lower().lstrip("+-") in ("inf", "infinity", "nan") else []

    assert strings(report) == []
    assert report["identical_to_dense"] is True and report["psnr"] is None and report["ssim"] == pytest.approx(1.0)
    assert "PSNR inf (identical)" in capsys.readouterr().out
