"""Schemathesis against the live OpenAPI document: generated requests (valid and invalid) on every route must
get no 5xx and answers that conform to the document (status codes, content types, headers, bodies), and
requests that break the schema must be refused.

A bounded slice runs here (``STRATA_SCHEMATHESIS_EXAMPLES`` per operation and phase, 25 by default, a fixed
seed); raise it for a longer run, e.g. ``STRATA_SCHEMATHESIS_EXAMPLES=1000 pytest tests/test_schemathesis.py``.
The check of schema-valid requests being accepted is left out: a body that the document can only call
"binary" is rarely a real image, sound or stream, and is rightly refused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("schemathesis")

EXAMPLES = int(os.environ.get("STRATA_SCHEMATHESIS_EXAMPLES", "25"))
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
          "response_schema_conformance,negative_data_rejection")


def test_api_conforms_to_its_document(live_server, tmp_path):
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    if st is None:
        pytest.skip("the schemathesis command (st) is not installed")
    argv = [st, "run", f"{live_server}/openapi.json", "--max-examples", str(EXAMPLES), "--seed", "1",
            "--checks", CHECKS, "--suppress-health-check", "filter_too_much", "--generation-database", "none",
            "--report-dir", str(tmp_path)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=tmp_path,
                            env={**os.environ, "NO_COLOR": "1"})
    summary = result.stdout[-4000:]
    assert result.returncode == 0, summary
    assert "passed" in summary and "failure" not in summary.split("SUMMARY")[-1].lower(), summary
