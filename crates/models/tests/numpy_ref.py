"""float64 numpy reference of thaw's llama/qwen2/qwen3/smollm3/gemma3 (and Mixtral/qwen3moe
experts) forward pass, written from
the model definitions independently of the Rust code (used by tests/numpy_ref.rs and
for debugging against real models).

usage: numpy_ref.py MODEL.gguf ID...   prints the last token's logits, one per line.
Q8=1 rounds matmul inputs to 8 bits per 32 values (to estimate kernel noise).
"""
# numpy float64 reference of the llama / gemma3 forward pass, last-token logits.
import sys, numpy as np, gguf
from gguf.quants import dequantize
path, ids = sys.argv[1], [int(x) for x in sys.argv[2:]]
r = gguf.GGUFReader(path)
T = {t.name: t for t in r.tensors}
def W(name):
    t = T[name]
    a = dequantize(t.data, t.tensor_type).astype(np.float64)
    return a.reshape([int(x) for x in reversed(t.shape)]) if a.ndim==1 and len(t.shape)>1 else a
def f(k):
    v = r.fields[k].contents(); return v
arch = f('general.architecture')
E = f(f'{arch}.embedding_length'); L = f(f'{arch}.block_count'); H = f(f'{arch}.attention.head_count'); HKV = f(f'{arch}.attention.head_count_kv')
eps = f(f'{arch}.attention.layer_norm_rms_epsilon'); base = f(f'{arch}.rope.freq_base')
hd = f(f'{arch}.attention.key_length') if f'{arch}.attention.key_length' in r.fields else E // H
n = len(ids); pos = np.arange(n)
import os
Q8 = os.environ.get('Q8') == '1'
def qa(x):
    if not Q8: return x
    sh = x.shape; xb = x.reshape(-1, 32)
    d = (np.abs(xb).max(1, keepdims=True) / 127).astype(np.float16).astype(np.float64)
    q = np.round(xb / np.where(d == 0, 1, d))
    return (q * d).reshape(sh)
def rms(x, w): return x / np.sqrt((x*x).mean(-1, keepdims=True) + eps) * w
def rope(x, b, neox):  # x: n, heads, hd
    half = hd // 2
    inv = b ** (-2.0*np.arange(half)/hd)
    th = pos[:, None] * inv[None, :]; c = np.cos(th)[:, None, :]; s = np.sin(th)[:, None, :]
    y = x.copy()
    if neox: a, bb = x[..., :half], x[..., half:]
    else: a, bb = x[..., 0::2], x[..., 1::2]
    ra = a*c - bb*s; rb = a*s + bb*c
    if neox: y[..., :half], y[..., half:] = ra, rb
    else: y[..., 0::2], y[..., 1::2] = ra, rb
    return y
emb = W('token_embd.weight')
x = emb[ids]
gem = arch == 'gemma3'
if gem: x = x * np.sqrt(np.float32(E))
for il in range(L):
    p = f'blk.{il}.'
    h = rms(x, W(p+'attn_norm.weight'))
    bias = lambda nm: W(p+nm) if p+nm in T else 0.0
    q = (qa(h) @ W(p+'attn_q.weight').T + bias('attn_q.bias')).reshape(n, H, hd)
    k = (qa(h) @ W(p+'attn_k.weight').T + bias('attn_k.bias')).reshape(n, HKV, hd)
    v = (qa(h) @ W(p+'attn_v.weight').T + bias('attn_v.bias')).reshape(n, HKV, hd)
    local = gem and il % 6 < 5
    if gem or arch in ('qwen3', 'qwen3moe'):
        q = rms(q, W(p+'attn_q_norm.weight')); k = rms(k, W(p+'attn_k_norm.weight'))
    b = 10000.0 if local else base
    neox = arch in ('gemma3', 'qwen2', 'qwen3', 'qwen3moe')
    # SmolLM3: every fourth layer attends without positions (NoPE).
    if not (arch == 'smollm3' and (il + 1) % 4 == 0):
        q = rope(q, b, neox); k = rope(k, b, neox)
    out = np.zeros((n, H, hd))
    g = H // HKV
    for hh in range(H):
        s = q[:, hh, :] @ k[:, hh//g, :].T / np.sqrt(hd)
        mask = np.triu(np.ones((n, n)), 1).astype(bool)
        if local: mask |= (pos[:, None] - pos[None, :]) >= f(f'{arch}.attention.sliding_window')
        s[mask] = -np.inf
        s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        out[:, hh, :] = s @ v[:, hh//g, :]
    o = qa(out.reshape(n, H*hd)) @ W(p+'attn_output.weight').T
    if gem: o = rms(o, W(p+'post_attention_norm.weight'))
    x = x + o
    h = rms(x, W(p+'ffn_norm.weight'))
    if p+'ffn_gate_inp.weight' in T:
        # Mixture of experts: softmax router, top-k, weights renormalized to sum 1.
        k_used = f(f'{arch}.expert_used_count')
        lg = qa(h) @ W(p+'ffn_gate_inp.weight').T
        pr = np.exp(lg - lg.max(-1, keepdims=True)); pr /= pr.sum(-1, keepdims=True)
        gx, ux, dx = (W(p+f'ffn_{nm}_exps.weight') for nm in ('gate', 'up', 'down'))
        o = np.zeros_like(h)
        for t in range(n):
            top = np.argsort(-pr[t], kind='stable')[:k_used]
            wt = pr[t, top] / pr[t, top].sum()
            for e, we in zip(top, wt):
                gt = qa(h[t]) @ gx[e].T; up = qa(h[t]) @ ux[e].T
                o[t] += we * (qa(gt/(1+np.exp(-gt))*up) @ dx[e].T)
    else:
        h = qa(h); gt = h @ W(p+'ffn_gate.weight').T; up = h @ W(p+'ffn_up.weight').T
        if gem: act = 0.5*gt*(1+np.tanh(np.sqrt(2/np.pi)*(gt+0.044715*gt**3)))
        else: act = gt/(1+np.exp(-gt))
        o = qa(act*up) @ W(p+'ffn_down.weight').T
    if gem: o = rms(o, W(p+'post_ffw_norm.weight'))
    x = x + o
x = rms(x[-1], W('output_norm.weight'))
out = W('output.weight') if 'output.weight' in T else emb
logits = out @ qa(x)
for v in logits: print(v)
