#!/usr/bin/env python3
"""Cold vs warm time to first token through the gateway.

Starts `thaw serve --config` with one deployment that scales to zero, then, N times:
waits until the deployment has no replica, sends a streaming request (cold: the
gateway spawns a worker) and right after it the same request again (warm). TTFT is
measured from sending the request to the first content chunk. Prints the medians and
the cold-minus-warm difference, plus the gateway's own cold-start step histogram sums.

    python3 bench/cold_gateway.py [--source smollm2] [--runs 20] [--threads 1]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
from conftest import _free_port  # noqa: E402


def ttft(root, model, max_tokens):
    body = json.dumps({"model": model, "stream": True, "max_tokens": max_tokens, "temperature": 0,
                       "messages": [{"role": "user", "content": "Say hi."}]}).encode()
    req = urllib.request.Request(root + "/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    first = None
    with urllib.request.urlopen(req, timeout=120) as r:
        for line in r:
            if first is None and line.startswith(b"data: {") and b'"content":"' in line \
                    and b'"content":""' not in line:
                first = time.perf_counter() - t0
    return first


def replicas(root, model):
    with urllib.request.urlopen(f"{root}/admin/deployments/{model}", timeout=10) as r:
        return json.load(r)["replicas"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--thaw", default=os.path.join(ROOT, "target", "release", "thaw"))
    ap.add_argument("--source", default="smollm2")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=4)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    port = _free_port()
    cfg = os.path.join(tmp, "thaw.toml")
    with open(cfg, "w") as f:
        f.write(f"""[gateway]
open = true
port = {port}
db = "{tmp}/thaw.db"

[[deployment]]
name = "m"
source = "{a.source}"
idle_timeout = "300ms"
threads = {a.threads}
ctx_size = 512
""")
    root = f"http://127.0.0.1:{port}"
    gw = subprocess.Popen([a.thaw, "serve", "--config", cfg], stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(root + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        ttft(root, "m", a.max_tokens)  # page cache warm-up, not measured
        cold, warm = [], []
        for _ in range(a.runs):
            while replicas(root, "m"):
                time.sleep(0.05)
            time.sleep(0.2)  # the old worker has exited
            cold.append(ttft(root, "m", a.max_tokens))
            warm.append(ttft(root, "m", a.max_tokens))
        metrics = urllib.request.urlopen(root + "/metrics").read().decode()
    finally:
        gw.terminate()
        gw.wait(timeout=30)
    steps = {}
    for line in metrics.splitlines():
        if line.startswith("thaw_cold_start_seconds_sum"):
            step = line.split('step="')[1].split('"')[0]
            steps[step] = float(line.split()[-1])
    n = a.runs + 1
    mc, mw = statistics.median(cold), statistics.median(warm)
    print(f"source={a.source} threads={a.threads} runs={a.runs}")
    print(f"TTFT cold median {mc * 1000:.1f} ms  warm median {mw * 1000:.1f} ms  "
          f"cold - warm {1000 * (mc - mw):.1f} ms")
    print("gateway cold-start steps, mean ms: " +
          ", ".join(f"{k} {1000 * v / n:.1f}" for k, v in sorted(steps.items())))


if __name__ == "__main__":
    main()
