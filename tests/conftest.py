"""Session-wide test settings.

Triton decides between compiled and interpreted functions when `triton.language` is first imported, so the
interpreter must be switched on before any test module imports dit_sparse (which imports triton). Without it the
Triton kernel tests pass alone but fail after another module has imported triton first.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
