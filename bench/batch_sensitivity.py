#!/usr/bin/env python3
"""How much a prompt's last-token logits move between evaluating it as one batch and
one token at a time, in llama.cpp and in thaw, and between the two engines (max |Δ|).

    cargo build --release -p thaw-models --example logits
    python3 bench/batch_sensitivity.py [--model gemma3-270m] [PROMPT]

Needs llama-cpp-python (built without AMX on a machine whose VM faults on it: README,
Benchmarks).
"""

import argparse
import os
import subprocess

import numpy as np
from llama_cpp import Llama

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prompt", nargs="?", default="Once upon a time, there was a little girl who")
    ap.add_argument("--model", default="gemma3-270m", help="cached model name or .gguf path")
    a = ap.parse_args()
    model = a.model if a.model.endswith(".gguf") else os.path.expanduser(f"~/.cache/thaw/models/{a.model}.gguf")
    llm = Llama(model_path=model, logits_all=True, n_ctx=512, n_threads=2, verbose=False)
    ids = llm.tokenize(a.prompt.encode(), add_bos=True, special=True)
    llm.reset()
    llm.eval(ids)
    llama_batch = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    llm.reset()
    for t in ids:
        llm.eval([t])
    llama_incr = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)

    exe = os.path.join(ROOT, "target", "release", "examples", "logits")

    def thaw(incremental):
        env = dict(os.environ, **({"THAW_INCREMENTAL": "1"} if incremental else {}))
        out = subprocess.run([exe, model, *map(str, ids)], capture_output=True, text=True, env=env, check=True)
        return np.array([float(x) for x in out.stdout.split()], dtype=np.float32)

    thaw_batch, thaw_incr = thaw(False), thaw(True)
    d = lambda x, y: float(np.abs(x - y).max())
    print(f"{len(ids)} tokens, max |logit| {float(np.abs(llama_batch).max()):.2f}")
    print(f"llama.cpp batch vs one at a time: {d(llama_batch, llama_incr):.4f}")
    print(f"thaw      batch vs one at a time: {d(thaw_batch, thaw_incr):.4f}")
    print(f"thaw vs llama.cpp, batch:         {d(thaw_batch, llama_batch):.4f}")
    print(f"thaw vs llama.cpp, one at a time: {d(thaw_incr, llama_incr):.4f}")


if __name__ == "__main__":
    main()
