"""llama.cpp's (llama-cpp-python) last-token logits for token ids, for tests/llamacpp.rs.

usage: llamacpp_ids.py MODEL ID...   prints one logit per line.
"""
import os
import sys

import numpy as np
from llama_cpp import Llama

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../bench"))
import llamacpp_setup  # noqa: E402,F401

model, ids = sys.argv[1], [int(x) for x in sys.argv[2:]]
llm = Llama(model_path=model, logits_all=True, n_ctx=64, n_threads=2, verbose=False)
llm.eval(ids)
for v in np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32):
    print("%.9g" % v)
