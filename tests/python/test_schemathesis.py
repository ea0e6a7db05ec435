"""A bounded schemathesis run against /openapi.json: no request may cause a 5xx, and
responses must match the documented schemas."""

import os
import shutil
import subprocess

import pytest

from conftest import start_server, stop_server


def test_schemathesis_fuzz():
    st = shutil.which("schemathesis") or shutil.which("st")
    if st is None:
        pytest.skip("schemathesis is not installed (pip install schemathesis)")
    # A small context bounds the cost of each generated request.
    server = start_server(["--max-running", "2", "--max-queue", "64"], ctx_size=128)
    try:
        n = os.environ.get("THAW_SCHEMATHESIS_EXAMPLES", "20")
        r = subprocess.run(
            [st, "run", server.root + "/openapi.json",
             "--url", server.root,
             "--max-examples", n,
             "--checks", "not_a_server_error,response_schema_conformance,status_code_conformance",
             "--request-timeout", "60",
             "--workers", "1"],
            capture_output=True, text=True, timeout=1800,
        )
        print(r.stdout[-8000:])
        print(r.stderr[-4000:])
        assert r.returncode == 0, "schemathesis found failures (output above)"
    finally:
        stop_server(server)
