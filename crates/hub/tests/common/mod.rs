//! Test helpers: a tiny HTTP/1.1 server on 127.0.0.1, zip building, temp homes.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Cursor, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};
use thaw_hub::{KnownModel, WheelPart};

/// What the server answers on one path.
#[derive(Clone)]
pub struct Route {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Announce the full length but send only this many bytes, then close.
    pub truncate_to: Option<usize>,
}

impl Route {
    pub fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Route {
        Route {
            status: 200,
            content_type,
            body: body.into(),
            truncate_to: None,
        }
    }
    pub fn status(status: u16) -> Route {
        Route {
            status,
            content_type: "text/plain",
            body: b"nope".to_vec(),
            truncate_to: None,
        }
    }
}

/// One request the server saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct Server {
    pub base: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serve `routes` (path → answer; anything else is 404) until dropped.
    pub fn start(routes: Vec<(&str, Route)>) -> Server {
        let routes: HashMap<String, Route> = routes
            .into_iter()
            .map(|(p, r)| (p.to_string(), r))
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                handle(conn, &routes, &seen2);
            }
        });
        Server {
            base: format!("http://{addr}"),
            seen,
            stop,
            addr,
            thread: Some(thread),
        }
    }

    pub fn hits(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(mut conn: TcpStream, routes: &HashMap<String, Route>, seen: &Mutex<Vec<Seen>>) {
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&req).into_owned();
    let mut lines = text.split("\r\n");
    let target = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("/")
        .to_string();
    let path = target.split('?').next().unwrap_or("/").to_string();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        headers,
    });
    let route = routes
        .get(&path)
        .cloned()
        .unwrap_or_else(|| Route::status(404));
    let head = format!(
        "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        route.status,
        route.content_type,
        route.body.len()
    );
    let body = &route.body[..route.truncate_to.unwrap_or(route.body.len())];
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
    let _ = conn.flush();
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

/// A zip (wheel) holding `members`, deflated.
pub fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in members {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic bytes that do not compress to nothing.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// An empty, private directory for one test.
pub fn temp_home(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("thaw-hub-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A one-model catalogue leaked to `'static`, as `Hub::with_catalog` wants.
pub fn catalog(
    name: &str,
    sha256: &str,
    size: u64,
    parts: Vec<WheelPart>,
) -> &'static [KnownModel] {
    let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    let model = KnownModel {
        name: leak(name),
        description: "test model",
        source: "test server",
        sha256: leak(sha256),
        size,
        parts: Box::leak(parts.into_boxed_slice()),
    };
    Box::leak(vec![model].into_boxed_slice())
}

pub fn part(package: &'static str, version: &'static str, member: &'static str) -> WheelPart {
    WheelPart {
        package,
        version,
        member,
    }
}

/// Every file under `dir`, recursively (to check nothing was left behind).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
