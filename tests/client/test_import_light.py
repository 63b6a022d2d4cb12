"""``import client`` must not pull in numpy, Pillow, onnxruntime, torch or the codec."""

from __future__ import annotations

import subprocess
import sys


def test_import_client_is_httpx_only() -> None:
    code = (
        "import sys, client\n"
        "heavy = [m for m in ('numpy', 'PIL', 'onnxruntime', 'torch', 'codec', 'server', 'fastapi') "
        "if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import client imported {out.stdout.strip()}"
