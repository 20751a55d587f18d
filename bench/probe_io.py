"""What the probe scripts in bench/ share: one shape's row added to the output, printed, and the JSON rewritten at
once (a timeout later keeps what was measured)."""

import json


def record(out: dict, path: str, shape: str, row: dict) -> None:
    out["shapes"][shape] = row
    print(shape, json.dumps(row), flush=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
