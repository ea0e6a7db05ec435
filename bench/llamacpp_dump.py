#!/usr/bin/env python3
"""Dump llama.cpp's named intermediate tensors (ggml eval callback) for one prompt
evaluated as one batch, to compare with thaw's (`trace_tensors` example).

    python3 bench/llamacpp_dump.py OUT.npz [PROMPT] [--model gemma3-270m] [--decode N]

Writes every F32/F16 tensor the graph computes, keyed "NAME#k" (k counts graph
evaluations: 0 = the prompt batch, 1.. = the N greedy decode steps after it), each as
a float32 array in ggml's ne order reversed (rows = tokens; a repeated name gets a
"'" per repeat). Also stores "ids" and "decoded" (the greedy tokens).
Needs llama-cpp-python built without AMX (README).
"""

import argparse
import ctypes
import os

import numpy as np
from llama_cpp import Llama

from llamacpp_setup import set_eval_callback

# struct ggml_tensor (ggml.h): type, buffer, ne[4], nb[4], op, op_params[16], flags,
# src[10], view_src, view_offs, data, name[64], extra, padding[8]
OFF_NE, OFF_NB, OFF_DATA, OFF_NAME = 16, 48, 248, 256


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("prompt", nargs="?", default="Once upon a time, there was a little girl who")
    ap.add_argument("--model", default="gemma3-270m", help="cached model name or .gguf path")
    ap.add_argument("--decode", type=int, default=0, help="greedy decode steps to dump too")
    a = ap.parse_args()
    model = a.model if a.model.endswith(".gguf") else os.path.expanduser(f"~/.cache/thaw/models/{a.model}.gguf")

    dump, state = {}, {"k": 0}

    def cb(t, ask, _ud):
        if ask:
            return True
        base = ctypes.cast(t, ctypes.c_void_p).value
        typ = ctypes.c_int32.from_address(base).value
        if typ not in (0, 1):
            return True
        ne = [ctypes.c_int64.from_address(base + OFF_NE + 8 * i).value for i in range(4)]
        nb = [ctypes.c_uint64.from_address(base + OFF_NB + 8 * i).value for i in range(4)]
        data = ctypes.c_void_p.from_address(base + OFF_DATA).value
        name = ctypes.string_at(base + OFF_NAME).decode()
        if not data or not name:
            return True
        esz = 4 if typ == 0 else 2
        span = sum((n - 1) * s for n, s in zip(ne, nb)) + esz
        raw = bytes((ctypes.c_char * span).from_address(data))
        flat = np.frombuffer(raw, dtype=np.float32 if typ == 0 else np.float16, count=span // esz)
        arr = np.lib.stride_tricks.as_strided(flat, shape=ne[::-1], strides=nb[::-1])
        key = f"{name}#{state['k']}"
        while key in dump:
            key += "'"
        dump[key] = np.array(arr, dtype=np.float32)
        return True

    cbf = set_eval_callback(cb)  # noqa: F841 (kept alive while llm runs)
    llm = Llama(model_path=model, logits_all=True, n_ctx=512, n_threads=2, verbose=False)
    ids = llm.tokenize(a.prompt.encode(), add_bos=True, special=True)
    llm.reset()
    llm.eval(ids)
    toks = []
    for _ in range(a.decode):
        state["k"] += 1
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        toks.append(tok)
        llm.eval([tok])
    dump["ids"] = np.array(ids)
    dump["decoded"] = np.array(toks)
    np.savez(a.out, **dump)
    print(len(ids), "tokens:", ids, "decoded:", toks, "tensors:", len(dump))


if __name__ == "__main__":
    main()
