#!/usr/bin/env python3
"""Compare thaw's intermediate tensors with llama.cpp's, in graph order, and report the
first that differs (max |Δ| and where) — for finding where the two orders of
arithmetic part:

    python3 bench/llamacpp_dump.py /tmp/l.npz [PROMPT] [--model M] [--decode N]
    cargo build --release -p thaw-models --example trace_tensors
    target/release/examples/trace_tensors MODEL.gguf /tmp/t.bin IDS [DECODED_IDS]
    python3 bench/compare_tensors.py /tmp/l.npz /tmp/t.bin [--all]

(IDS/DECODED_IDS as printed by llamacpp_dump.py, comma-separated.) Tensors are
matched by llama.cpp's names (thaw traces the main ones of each layer); rows llama.cpp
computes that thaw does not (all-token output norm) are compared on the last rows.
"""

import argparse
import struct

import numpy as np


def read_thaw(path):
    out, raw, o = {}, open(path, "rb").read(), 0
    while o < len(raw):
        (nl,) = struct.unpack_from("<I", raw, o)
        name = raw[o + 4 : o + 4 + nl].decode()
        step, cnt = struct.unpack_from("<IQ", raw, o + 4 + nl)
        o += 4 + nl + 12
        out[f"{name}#{step}"] = np.frombuffer(raw, np.float32, cnt, o)
        o += 4 * cnt
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("llama")
    ap.add_argument("thaw")
    ap.add_argument("--all", action="store_true", help="list every tensor, not only up to the first difference")
    a = ap.parse_args()
    ll, th = np.load(a.llama), read_thaw(a.thaw)
    first = None
    for k, v in th.items():
        if k not in ll:
            # No tensor of that name in llama.cpp's graph (thaw's attn_out is Wo's
            # product, an unnamed node there).
            continue
        r = ll[k].reshape(-1)
        if r.size != v.size:
            # llama.cpp computes the last layers / the output only for rows it outputs
            r = r[-v.size :]
        d = np.abs(r - v)
        n_diff = int((r != v).sum())
        if n_diff or a.all:
            i = int(d.argmax())
            print(f"{k:24s} {n_diff:7d}/{v.size:<7d} max|Δ| {d.max():.3e} at {i} (llama {r[i]:.6g} thaw {v[i]:.6g}), max|x| {np.abs(r).max():.3g}")
        if n_diff and first is None:
            first = k
            if not a.all:
                break
    print("first differing:", first)


if __name__ == "__main__":
    main()
