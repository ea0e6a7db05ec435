#!/usr/bin/env python3
"""Which summation order llama.cpp uses for a Q6_K matrix, per batch size: runs prompts
of 1..20 tokens through llama-cpp-python, captures one Q6_K matmul's input and output
with ggml's eval callback, and recomputes the output in numpy in the two orders thaw
implements (crates/kernels/src/reference/kquants.rs): ggml's AVX2 `vec_dot_q6_K_q8_K`
lanes, and one FMA per super-block. Prints how many outputs each order misses.

    pip install gguf     # for reading the weights
    python3 bench/q6k_order.py [--model gemma3-270m] [--layer 0]

(Gemma 3 270M Q4_K_M: Q6_K `ffn_down` in layers 0, 1, 4, 7, 10, 13, 15, 16, 17.)
Result with llama-cpp-python 0.3.36 (AVX-512 build, 2 threads): lanes for batches of
1-7 tokens, per-super-block FMA for 8 and more, 0 misses each.
"""

import argparse
import ctypes
import os

import gguf
import numpy as np
from llama_cpp import Llama

from llamacpp_setup import set_eval_callback

f32 = np.float32


def fma(a, b, c):
    # f32 × f32 is exact in f64; the f64 add then rounds like a fused multiply-add
    # except for (rare) double-rounding cases.
    return (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(f32)


def q6_k(t):
    """(q - 32) values [rows, blocks, 256], scales [rows, blocks, 16], d [rows, blocks]."""
    ncol, nrow = int(t.shape[0]), int(t.shape[1])
    b = np.asarray(t.data).view(np.uint8).reshape(nrow, ncol // 256, 210)
    ql, qh = b[..., :128].astype(np.int32), b[..., 128:192].astype(np.int32)
    sc = b[..., 192:208].view(np.int8).astype(np.int32)
    d = b[..., 208:210].copy().view(np.float16)[..., 0].astype(f32)
    q = np.zeros((nrow, ncol // 256, 256), np.int32)
    for h in range(2):
        lo, hi = ql[..., 64 * h:64 * h + 64], qh[..., 32 * h:32 * h + 32]
        for l in range(32):
            q[..., 128 * h + l] = (lo[..., l] & 15) | ((hi[..., l] & 3) << 4)
            q[..., 128 * h + l + 32] = (lo[..., l + 32] & 15) | (((hi[..., l] >> 2) & 3) << 4)
            q[..., 128 * h + l + 64] = (lo[..., l] >> 4) | (((hi[..., l] >> 4) & 3) << 4)
            q[..., 128 * h + l + 96] = (lo[..., l + 32] >> 4) | (((hi[..., l] >> 6) & 3) << 4)
    return q - 32, sc, d


def q8_k(x):
    """ggml's quantize_row_q8_K: values [n, blocks, 256] and d [n, blocks]."""
    x = x.astype(f32).reshape(x.shape[0], -1, 256)
    i = np.abs(x).argmax(-1)
    mx = np.take_along_axis(x, i[..., None], -1)[..., 0]
    iscale = (f32(-127.0) / mx).astype(f32)
    q = np.minimum(127, np.rint((iscale[..., None] * x).astype(f32))).astype(np.int32)
    return q, (f32(1.0) / iscale).astype(f32)


def per_super_block(A, AD, W, S, D):
    isum = (A[:, None] * (W * np.repeat(S, 16, axis=-1))[None]).sum(-1)
    acc = np.zeros(isum.shape[:2], f32)
    for l in range(isum.shape[2]):
        t = (isum[:, :, l].astype(f32) * D[None, :, l]).astype(f32)
        acc = fma(t, np.broadcast_to(AD[:, l][:, None], t.shape), acc)
    return acc


def vec_dot_lanes(A, AD, W, S, D):
    n, rows = A.shape[0], W.shape[0]
    sx = np.repeat(S, 16, axis=-1)
    acc = np.zeros((8, n, rows), f32)
    for l in range(W.shape[1]):
        prod = A[:, None, l, :] * ((W[:, l, :] + 32) * sx[:, l, :])[None]
        lanes = prod.reshape(n, rows, 8, 8, 4).sum(axis=(2, 4))
        bsums = A[:, l, :].reshape(n, 16, 16).sum(-1)
        lanes = lanes - 32 * (bsums[:, None, :] * S[None, :, l, :]).reshape(n, rows, 8, 2).sum(-1)
        d = (D[None, :, l] * AD[:, l][:, None]).astype(f32)
        for i in range(8):
            acc[i] = fma(np.broadcast_to(d, acc[i].shape), lanes[..., i].astype(f32), acc[i])
    a, add = list(acc), lambda u, v: (u + v).astype(f32)
    return add(add(add(a[0], a[4]), add(a[2], a[6])), add(add(a[1], a[5]), add(a[3], a[7])))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m", help="cached model name or .gguf path")
    ap.add_argument("--layer", type=int, default=0, help="a layer whose ffn_down is Q6_K")
    a = ap.parse_args()
    model = a.model if a.model.endswith(".gguf") else os.path.expanduser(f"~/.cache/thaw/models/{a.model}.gguf")
    tensors = {t.name: t for t in gguf.GGUFReader(model).tensors}
    wt = tensors[f"blk.{a.layer}.ffn_down.weight"]
    assert wt.tensor_type.name == "Q6_K", f"blk.{a.layer}.ffn_down is {wt.tensor_type.name}"
    W, S, D = q6_k(wt)

    names = {f"ffn_geglu-{a.layer}", f"ffn_swiglu-{a.layer}", f"ffn_out-{a.layer}"}
    dump = {}

    def cb(t, ask, _):
        base = ctypes.cast(t, ctypes.c_void_p).value
        name = ctypes.string_at(base + 256).decode()  # ggml_tensor.name
        if ask or name not in names:
            return ask and name in names
        ne = [ctypes.c_int64.from_address(base + 16 + 8 * i).value for i in range(4)]
        data = ctypes.c_void_p.from_address(base + 248).value  # ggml_tensor.data
        n = ne[0] * ne[1] * ne[2] * ne[3]
        dump[name.split("-")[0]] = np.frombuffer((ctypes.c_float * n).from_address(data), f32).copy().reshape(-1, ne[0])
        return True

    cbf = set_eval_callback(cb)  # noqa: F841 (kept alive while llm runs)
    llm = Llama(model_path=model, n_ctx=512, n_threads=2, verbose=False)
    text = b"Once upon a time, there was a little girl who lived in a small village near the forest and every day"
    ids = llm.tokenize(text, add_bos=True, special=True)
    for n in [*range(1, 10), 12, 15, 16, 17, 20]:
        llm.reset()
        dump.clear()
        llm.eval(ids[:n])
        x = dump.get("ffn_geglu", dump.get("ffn_swiglu"))
        ref = dump["ffn_out"]
        A, AD = q8_k(x)
        lanes = int((vec_dot_lanes(A, AD, W, S, D) != ref).sum())
        block = int((per_super_block(A, AD, W, S, D) != ref).sum())
        print(f"{n:3d} tokens: vec_dot lanes miss {lanes:6d}, per-super-block FMA misses {block:6d} of {ref.size}")


if __name__ == "__main__":
    main()
