"""Reference values from llama.cpp (llama-cpp-python) for tests/llamacpp.rs.

usage: llamacpp_ref.py MODEL N_GREEDY PROMPT...
Prints, per prompt i:
  PROMPT i <token ids>        (llama.cpp's own tokenization, BOS per the model,
                              special tokens such as <|im_start|> parsed)
  LOGITS i <n_vocab floats>   (logits of the last prompt token)
  GREEDY i <token ids>        (N_GREEDY greedy tokens)
  MARGIN i <floats>           (top-1 minus top-2 logit before each greedy token)
"""
import os
import sys

import numpy as np
from llama_cpp import Llama

# The AMX guard shared with the bench scripts (bench/llamacpp_setup.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../bench"))
import llamacpp_setup  # noqa: E402,F401


model, n_greedy, prompts = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
llm = Llama(model_path=model, logits_all=True, n_ctx=512, n_threads=2, verbose=False)
for i, text in enumerate(prompts):
    ids = llm.tokenize(text.encode(), add_bos=True, special=True)
    llm.reset()
    llm.eval(ids)
    logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    print("PROMPT", i, *ids)
    print("LOGITS", i, *("%.6g" % v for v in logits))
    out, margins = [], []
    for _ in range(n_greedy):
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top2 = np.sort(row)[-2:]
        margins.append(float(top2[1] - top2[0]))
        tok = int(np.argmax(row))
        out.append(tok)
        llm.eval([tok])
    print("GREEDY", i, *out)
    print("MARGIN", i, *("%.4f" % m for m in margins))
    sys.stdout.flush()
