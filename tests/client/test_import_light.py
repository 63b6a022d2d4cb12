"""``import strata.client`` must not pull in numpy, Pillow, onnxruntime, torch, the codec or the server."""

from __future__ import annotations

import subprocess
import sys


def test_import_client_is_httpx_only(tmp_path) -> None:
    code = (
        "import sys, strata.client\n"
        "heavy = [m for m in ('numpy', 'PIL', 'onnxruntime', 'torch', 'strata.image', 'strata.audio', "
        "'strata.server', 'fastapi') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "", f"import strata.client imported {out.stdout.strip()}"
