#!/usr/bin/env python3
"""Side-by-side speed of thaw and llama.cpp on the same GGUF, same threads, one run.

Runs `thaw bench --json` and the same tests through llama-cpp-python (llama.cpp built
from source by pip), alternating between the two for each repetition so drift on a
shared machine hits both alike, and prints tokens/s medians and thaw/llama.cpp ratios.

    pip install llama-cpp-python
    cargo build --release
    python3 bench/compare_llamacpp.py --models smollm2 gemma3-270m --threads 2

Tests: pp128, pp512 (prompt of random tokens, one batch) and tg128 (128 single-token
decodes from an empty context), like llama-bench.
"""

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THAW = ROOT / "target" / "release" / "thaw"


def thaw_model_path(spec):
    out = subprocess.run([str(THAW), "pull", spec], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def thaw_once(path, threads, pp, tg):
    cmd = [str(THAW), "bench", path, "--json", "--reps", "1", "--threads", str(threads),
           "--prompt", ",".join(str(p) for p in pp), "--gen", str(tg)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    doc = json.loads(out.stdout)
    return {r["test"]: r["tokens_per_second_median"] for r in doc["results"]}, doc


def llama_once(llm, pp, tg, n_vocab):
    res = {}
    for n in pp:
        toks = [random.randrange(n_vocab) for _ in range(n)]
        llm.reset()
        t = time.perf_counter()
        llm.eval(toks)
        res[f"pp{n}"] = n / (time.perf_counter() - t)
    if tg:
        toks = [random.randrange(n_vocab) for _ in range(tg)]
        llm.reset()
        t = time.perf_counter()
        for tok in toks:
            llm.eval([tok])
        res[f"tg{tg}"] = tg / (time.perf_counter() - t)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["smollm2", "gemma3-270m"])
    ap.add_argument("--threads", type=int, nargs="+", default=[2])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pp", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        import llama_cpp
    except ImportError:
        sys.exit("llama-cpp-python is not installed: pip install llama-cpp-python")
    if not THAW.exists():
        sys.exit(f"{THAW} not found: run `cargo build --release` first")

    table = []
    for spec in args.models:
        path = thaw_model_path(spec)
        for threads in args.threads:
            llm = llama_cpp.Llama(model_path=path, n_ctx=1024, n_batch=512, n_ubatch=512,
                                  n_threads=threads, n_threads_batch=threads, verbose=False)
            n_vocab = llm.n_vocab()
            llama_once(llm, [16], 4, n_vocab)  # warm-up
            thaw_once(path, threads, [16], 4)
            thaw_runs, llama_runs, doc = [], [], None
            for _ in range(args.reps):
                r, doc = thaw_once(path, threads, args.pp, args.tg)
                thaw_runs.append(r)
                llama_runs.append(llama_once(llm, args.pp, args.tg, n_vocab))
            del llm
            for test in [f"pp{p}" for p in args.pp] + ([f"tg{args.tg}"] if args.tg else []):
                t = statistics.median(r[test] for r in thaw_runs)
                l = statistics.median(r[test] for r in llama_runs)
                row = {"model": spec, "threads": threads, "test": test, "thaw": t,
                       "llama.cpp": l, "ratio": t / l}
                if test.startswith("tg"):
                    ceiling = doc["decode_ceiling_tokens_per_second"]
                    row["ceiling"] = ceiling
                    row["thaw_fraction_of_ceiling"] = t / ceiling
                    row["llama_fraction_of_ceiling"] = l / ceiling
                table.append(row)
    if args.json:
        print(json.dumps(table, indent=2))
        return
    print(f"| model | threads | test | thaw tok/s | llama.cpp tok/s | thaw / llama.cpp | thaw % of ceiling |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        frac = f"{100 * r['thaw_fraction_of_ceiling']:.0f}%" if "ceiling" in r else ""
        print(f"| {r['model']} | {r['threads']} | {r['test']} | {r['thaw']:.1f} | "
              f"{r['llama.cpp']:.1f} | {r['ratio']:.2f}× | {frac} |")


if __name__ == "__main__":
    main()
