#!/usr/bin/env python3
"""Perplexity of a text file under llama.cpp (via llama-cpp-python), computed exactly
as llama.cpp's `llama-perplexity` tool does, to compare with `thaw perplexity`.

    python3 bench/llamacpp_perplexity.py MODEL.gguf FILE --ctx 256 [--threads 2] [--json]

The file is tokenized whole (BOS per the model, no special-token parsing), split into
non-overlapping chunks of `ctx` tokens, each evaluated from an empty cache with its
first token replaced by BOS when the model adds one, and the second half of each chunk
is scored: logits at position j predict token j+1, for j in [ctx/2, ctx-1).
"""

import argparse
import json
import math
import sys

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("file")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import llama_cpp

    llm = llama_cpp.Llama(model_path=args.model, n_ctx=args.ctx, n_batch=args.ctx,
                          n_ubatch=args.ctx, logits_all=True, n_threads=args.threads,
                          n_threads_batch=args.threads, verbose=False)
    text = open(args.file, encoding="utf-8").read()
    add_bos = llm._model.add_bos_token()
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)
    n_ctx = args.ctx
    n_chunks = len(tokens) // n_ctx
    if n_chunks < 1:
        sys.exit(f"need at least {n_ctx} tokens, the file has {len(tokens)}")
    first = n_ctx // 2
    nll, count = 0.0, 0
    for c in range(n_chunks):
        chunk = list(tokens[c * n_ctx:(c + 1) * n_ctx])
        if add_bos:
            chunk[0] = llm.token_bos()
        llm.reset()
        llm.eval(chunk)
        logits = np.array(llm.scores[:n_ctx], dtype=np.float64)
        for j in range(first, n_ctx - 1):
            row = logits[j]
            m = row.max()
            logz = m + math.log(np.exp(row - m).sum())
            nll += logz - row[tokens[c * n_ctx + j + 1]]
            count += 1
    ppl = math.exp(nll / count)
    if args.json:
        print(json.dumps({"perplexity": ppl, "chunks": n_chunks, "tokens": len(tokens)}))
    else:
        print(f"perplexity: {ppl:.4f} ({n_chunks} chunks of {n_ctx} tokens, {len(tokens)} tokens)")


if __name__ == "__main__":
    main()
