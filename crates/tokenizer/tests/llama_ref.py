#!/usr/bin/env python3
"""Reference token ids from llama.cpp (llama-cpp-python), for the thaw-tokenizer tests.

usage: llama_ref.py MODEL.gguf CASES.json OUT.json
CASES.json: {"texts": [...], "bos_texts": [...]}.
OUT.json: {"plain": [[ids]], "special": [[ids]], "bos": [[ids]], "eog": [...]} where
plain = tokenize(add_special=False, parse_special=False), special = (False, True),
bos = (True, False) over bos_texts."""
import json, sys

import llama_cpp

model, cases_path, out_path = sys.argv[1:4]
with open(cases_path, encoding="utf-8") as f:
    cases = json.load(f)
llm = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)

def tok(text, add_special, special):
    return llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=special)

out = {
    "plain": [tok(t, False, False) for t in cases["texts"]],
    "special": [tok(t, False, True) for t in cases["texts"]],
    "bos": [tok(t, True, False) for t in cases["bos_texts"]],
}
vocab = llama_cpp.llama_model_get_vocab(llm.model) if hasattr(llama_cpp, "llama_model_get_vocab") else None
if vocab is not None:
    n = llama_cpp.llama_vocab_n_tokens(vocab)
    out["eog"] = [i for i in range(n) if llama_cpp.llama_vocab_is_eog(vocab, i)]
    out["eot"] = llama_cpp.llama_vocab_eot(vocab)
with open(out_path, "w", encoding="utf-8") as f:
    json.dump(out, f)
