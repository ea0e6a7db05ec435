//! A `THAW_KERNELS` that names no kernel set this CPU runs is an error at load, not a
//! silent fallback to the best set (the kernel set is chosen once per process, so this
//! file holds one test).

#[test]
fn unknown_kernel_override_is_refused_by_name() {
    // SAFETY: the only test of this process, run before anything reads the variable.
    unsafe { std::env::set_var("THAW_KERNELS", "avx9000") };
    let Ok(model) = thaw_hub::ensure_model("smollm2") else {
        eprintln!("skipped: smollm2 unavailable");
        return;
    };
    let err = thaw_engine::Engine::load(&model, &thaw_engine::LoadOptions { threads: 1 })
        .err()
        .expect("a bogus THAW_KERNELS must not load");
    let msg = err.to_string();
    assert!(
        msg.contains("THAW_KERNELS=avx9000") && msg.contains("avx512"),
        "{msg}"
    );
}
