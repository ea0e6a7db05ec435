"""Start a real `thaw serve` for the end-to-end tests.

The server command is, in order of preference:
  THAW_SERVE_CMD  a full command prefix, e.g. "target/release/examples/serve"
                  (the thaw-server example binary, same arguments as `thaw serve`)
  THAW_BIN        the thaw binary (default target/release/thaw), run as `thaw serve`
The tests are skipped, with the reason printed, when neither can serve.
"""

import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.environ.get("THAW_TEST_MODEL", "smollm2")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_cmd():
    cmd = os.environ.get("THAW_SERVE_CMD")
    if cmd:
        return shlex.split(cmd), None
    thaw = os.environ.get("THAW_BIN", os.path.join(ROOT, "target", "release", "thaw"))
    if not os.path.exists(thaw):
        return None, f"thaw binary not found at {thaw} (set THAW_BIN or THAW_SERVE_CMD)"
    probe = subprocess.run([thaw, "serve", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None, f"{thaw} has no `serve` subcommand yet (set THAW_SERVE_CMD to the thaw-server example)"
    return [thaw, "serve"], None


class Server:
    def __init__(self, proc, port, log):
        self.proc = proc
        self.port = port
        self.log = log
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.root = f"http://127.0.0.1:{port}"

    def metric(self, name):
        text = urllib.request.urlopen(self.root + "/metrics", timeout=10).read().decode()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)


def start_server(extra_args=(), ctx_size=512):
    cmd, why = _server_cmd()
    if cmd is None:
        print(f"SKIP: {why}", file=sys.stderr)
        pytest.skip(why)
    port = _free_port()
    args = cmd + [MODEL, "--port", str(port), "--ctx-size", str(ctx_size), *extra_args]
    log = open(os.path.join(ROOT, "target", f"thaw-serve-{port}.log"), "w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {log.name}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return Server(proc, port, log)
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become healthy in 120 s")


def stop_server(server):
    server.proc.terminate()  # SIGTERM: graceful shutdown
    try:
        rc = server.proc.wait(timeout=30)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
        server.log.close()
    return rc


@pytest.fixture(scope="session")
def server():
    s = start_server(["--max-running", "8", "--max-queue", "32"])
    yield s
    rc = stop_server(s)
    assert rc == 0, f"server exited with {rc} after SIGTERM"


@pytest.fixture(scope="session")
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)
