#!/usr/bin/env python3
"""Are thaw's logits bit-identical to llama.cpp's for a prompt batch and every greedy
decode step after it? Runs llama.cpp's greedy loop (llama-cpp-python), then thaw's
`trace` example on the same prompt and decoded tokens, and prints per prompt the
largest |Δlogit| over all steps and the first step that is not bit-identical.

    cargo build --release -p thaw-models --example trace
    python3 bench/decode_identity.py [--model gemma3-270m] [--steps 32] [PROMPT ...]

Without prompts: the four prompts of crates/models/tests/llamacpp.rs for that model.
"""

import argparse
import os
import subprocess
import tempfile

import numpy as np
from llama_cpp import Llama

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PLAIN = [
    "The capital of France is",
    "Once upon a time, there was a little girl who",
    'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
]
CHAT = {
    "smollm2": "<|im_start|>user\nWhat is the tallest mountain in the world?<|im_end|>\n<|im_start|>assistant\n",
    "gemma3-270m": "<start_of_turn>user\nWhat is the tallest mountain in the world?<end_of_turn>\n<start_of_turn>model\n",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prompts", nargs="*")
    ap.add_argument("--model", default="gemma3-270m", help="cached model name or .gguf path")
    ap.add_argument("--steps", type=int, default=32)
    a = ap.parse_args()
    name = os.path.basename(a.model).removesuffix(".gguf")
    model = a.model if a.model.endswith(".gguf") else os.path.expanduser(f"~/.cache/thaw/models/{a.model}.gguf")
    prompts = a.prompts or PLAIN + ([CHAT[name]] if name in CHAT else [])
    llm = Llama(model_path=model, logits_all=True, n_ctx=512, n_threads=2, verbose=False)
    exe = os.path.join(ROOT, "target", "release", "examples", "trace")
    for text in prompts:
        ids = llm.tokenize(text.encode(), add_bos=True, special=True)
        llm.reset()
        llm.eval(ids)
        rows, toks = [], []
        for _ in range(a.steps):
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            rows.append(row)
            toks.append(int(np.argmax(row)))
            llm.eval([toks[-1]])
        with tempfile.NamedTemporaryFile(suffix=".f32") as f:
            # thaw: the prompt's logits, then one row per decode step (the last token's
            # own step is not needed).
            subprocess.run([exe, model, f.name, ",".join(map(str, ids)), ",".join(map(str, toks[:-1]))], check=True)
            thaw = np.fromfile(f.name, dtype=np.float32).reshape(a.steps, -1)
        ref = np.stack(rows)
        diff = np.abs(thaw - ref).max(axis=1)
        bad = np.nonzero((thaw != ref).any(axis=1))[0]
        first = int(bad[0]) if len(bad) else None
        print(f"{len(ids):3d}-token prompt {text[:30]!r}: max |Δlogit| {diff.max():.4f} over {a.steps} steps, "
              f"first non-identical step: {first}")


if __name__ == "__main__":
    main()
