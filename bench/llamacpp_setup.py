"""Set-up shared by the scripts that drive llama.cpp through llama-cpp-python
(bench/*.py and crates/models/tests/llamacpp_ref.py): import this before creating a
`Llama`.

A llama.cpp built with AMX (GGML_NATIVE on a CPU that reports it) kills the process
with SIGILL on the first multi-token matmul where the (virtual) machine faults on tile
instructions, as on this project's machines. Such a build is run without extra buffer
types (no AMX, but also no weight repacking, so its sums follow the plain vec_dot
order); a build without AMX (CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON ...
-DGGML_AMX_INT8=OFF", see README) keeps llama.cpp's default repacked kernels, whose
order thaw follows. `thaw bench --cold` applies the same rule in its own inline script.
"""

import llama_cpp.llama_cpp as lc

if b"AMX_INT8 = 1" in lc.llama_print_system_info():
    _default_model_params = lc.llama_model_default_params

    def _model_params():
        p = _default_model_params()
        p.use_extra_bufts = False
        return p

    lc.llama_model_default_params = _model_params


def set_eval_callback(cb):
    """Makes every later `Llama` context call `cb(tensor, ask, user_data)` (ggml's eval
    callback) for each graph node. Returns the ctypes wrapper, which the caller must
    keep alive as long as the contexts run."""
    cbf = lc.ggml_backend_sched_eval_callback(cb)
    default_context_params = lc.llama_context_default_params

    def params():
        p = default_context_params()
        p.cb_eval = cbf
        return p

    lc.llama_context_default_params = params
    return cbf
