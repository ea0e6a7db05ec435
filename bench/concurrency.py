#!/usr/bin/env python3
"""Serving throughput of thaw and llama.cpp's server under concurrent load, one run.

Sends the same N chat requests (different prompts, greedy, `max_tokens` T with end of
generation suppressed so every answer is T tokens) at each concurrency level to
`thaw serve` and to llama-cpp-python's OpenAI server on the same GGUF with the same
threads, alternating servers per level, and prints aggregate generated tokens/s and
time-to-first-token p50/p99 with thaw/llama.cpp ratios.

    pip install uvicorn fastapi sse-starlette starlette-context pydantic-settings
    cargo build --release
    python3 bench/concurrency.py --model smollm2 --threads 2 --concurrency 1,8

llama-cpp-python's server runs one request at a time (a single llama.cpp context, no
parallel slots): at concurrency 8 requests queue behind each other. Tokens are counted
from the streamed content chunks (one token each on both servers) and checked against
thaw's `usage`.
"""

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THAW = ROOT / "target" / "release" / "thaw"

TOPICS = [
    "a lighthouse keeper", "the history of tea", "how rainbows form", "a robot learning to paint",
    "the water cycle", "a city under the sea", "why cats purr", "the first moon landing",
    "a recipe for bread", "volcanoes", "a dragon who is afraid of fire", "how bees make honey",
    "the Roman empire", "a journey across the desert", "photosynthesis", "a haunted library",
    "the invention of the printing press", "a friendly ghost", "how airplanes fly",
    "the northern lights", "a detective in Paris", "the life of a tree", "chess strategy",
    "a small village in winter", "the speed of light", "a pirate's lost map", "coral reefs",
    "a talking clock", "the Great Wall of China", "how vaccines work", "a garden on Mars",
    "the ocean at night", "an old violin", "the origin of coffee", "a train through the Alps",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, path, proc, timeout=180):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode} before it was ready")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    sys.exit(f"server on port {port} not ready after {timeout}s")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def one_request(port, body):
    """Streams one chat completion; returns (ttft s, total s, tokens, usage tokens)."""
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/v1/chat/completions", json.dumps(body),
              {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:300]!r}")
    ttft = None
    tokens = 0
    usage = None
    buf = b""
    while True:
        line = r.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        chunk = json.loads(data)
        if chunk.get("usage"):
            usage = chunk["usage"].get("completion_tokens")
        for ch in chunk.get("choices", []):
            if ch.get("delta", {}).get("content"):
                tokens += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
    c.close()
    return ttft if ttft is not None else float("nan"), time.perf_counter() - t0, tokens, usage


def run_level(port, bodies, concurrency, expected):
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        results = list(ex.map(lambda b: one_request(port, b), bodies))
    wall = time.perf_counter() - t0
    ttfts = sorted(r[0] for r in results)
    tokens = sum(r[2] for r in results)
    # An answer shorter than asked (cut off, or an error) is reported, not hidden.
    incomplete = sum(1 for r in results if r[2] < expected)
    usage = [r[3] for r in results if r[3] is not None]
    return {
        "tok_s": tokens / wall,
        "tokens": tokens,
        "usage_tokens": sum(usage) if usage else None,
        "wall_s": wall,
        "incomplete": incomplete,
        "ttft_p50": statistics.median(ttfts),
        "ttft_p99": ttfts[min(len(ttfts) - 1, int(round(0.99 * (len(ttfts) - 1))))],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="thaw model name or .gguf path")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--ctx", type=int, default=1024, help="context per sequence")
    ap.add_argument("--skip-llama", action="store_true")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    levels = [int(x) for x in a.concurrency.split(",")]

    path = a.model
    if not path.endswith(".gguf"):
        out = subprocess.run([str(THAW), "pull", a.model], check=True, capture_output=True, text=True)
        path = out.stdout.strip().splitlines()[-1]

    eos = None
    have_llama = not a.skip_llama
    if have_llama:
        try:
            import llama_cpp  # noqa: F401
            import uvicorn  # noqa: F401
            from llama_cpp import Llama
            v = Llama(model_path=path, vocab_only=True, verbose=False)
            eos = v.token_eos()
            del v
        except ImportError as e:
            print(f"llama.cpp skipped: {e} (pip install llama-cpp-python uvicorn fastapi "
                  "sse-starlette starlette-context pydantic-settings)", file=sys.stderr)
            have_llama = False

    def bodies(server):
        out = []
        for i in range(a.requests):
            b = {
                "model": "m",
                "messages": [{"role": "user", "content": f"Write a long essay about {TOPICS[i % len(TOPICS)]}."}],
                "max_tokens": a.tokens,
                "temperature": 0,
                "stream": True,
            }
            if server == "thaw":
                b["ignore_eos"] = True
                b["stream_options"] = {"include_usage": True}
            elif eos is not None:
                # llama-cpp-python's server has no ignore_eos: ban the EOS token instead.
                b["logit_bias"] = {str(eos): -100}
            out.append(b)
        return out

    servers = {}
    procs = []
    try:
        tp = free_port()
        tproc = subprocess.Popen(
            [str(THAW), "serve", path, "--port", str(tp), "--threads", str(a.threads),
             "--ctx-size", str(a.ctx), "--model-id", "m", "--max-running", str(max(levels)), "--max-queue", str(4 * a.requests)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(tproc)
        wait_ready(tp, "/health", tproc)
        servers["thaw"] = tp
        if have_llama:
            lp = free_port()
            lproc = subprocess.Popen(
                [sys.executable, "-m", "llama_cpp.server", "--model", path, "--n_threads", str(a.threads),
                 "--n_threads_batch", str(a.threads), "--n_ctx", str(a.ctx), "--port", str(lp), "--host", "127.0.0.1",
                 # By default a new request cancels the one being answered.
                 "--interrupt_requests", "False"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(lproc)
            wait_ready(lp, "/v1/models", lproc)
            servers["llama.cpp"] = lp
        # Warm-up: page cache, first-request set-up.
        for name, port in servers.items():
            one_request(port, bodies(name)[0])
        results = {}
        for c in levels:
            for name, port in servers.items():
                r = run_level(port, bodies(name), c, a.tokens)
                results[(name, c)] = r
                print(f"{name:10} c={c}: {r['tok_s']:.1f} tok/s ({r['tokens']} tokens, "
                      f"usage {r['usage_tokens']}, {r['incomplete']} answers incomplete), TTFT p50 {r['ttft_p50']:.3f}s p99 {r['ttft_p99']:.3f}s",
                      file=sys.stderr)
    finally:
        for p in procs:
            stop(p)

    print(f"\n{a.requests} chat requests x {a.tokens} tokens, {Path(path).name}, {a.threads} threads\n")
    print("| server | concurrency | aggregate tok/s | TTFT p50 | TTFT p99 |")
    print("|---|---|---|---|---|")
    for c in levels:
        for name in servers:
            r = results[(name, c)]
            print(f"| {name} | {c} | {r['tok_s']:.1f} | {r['ttft_p50']:.2f} s | {r['ttft_p99']:.2f} s |")
    if "llama.cpp" in servers:
        print()
        for c in levels:
            t, l = results[("thaw", c)], results[("llama.cpp", c)]
            print(f"concurrency {c}: thaw/llama.cpp tok/s {t['tok_s'] / l['tok_s']:.2f}x, "
                  f"TTFT p99 {t['ttft_p99'] / l['ttft_p99']:.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps(
            {f"{k[0]}@{k[1]}": v for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
