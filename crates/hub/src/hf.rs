//! Fetching `hf:ORG/REPO/FILE.gguf` from the Hugging Face hub (or a mirror at HF_ENDPOINT).

use std::io;
use std::path::Path;

use reqwest::blocking::Client;

use crate::cache::{HashingWriter, TempFile, record_sha256};
use crate::error::{HubError, io_err};
use crate::http::{self, Download, Origin};
use crate::spec::HfRef;

/// The hub used when HF_ENDPOINT is not set (same variable as `huggingface_hub`).
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The download URL of a file on the main branch.
pub fn file_url(endpoint: &str, r: &HfRef) -> String {
    format!(
        "{}/{}/{}/resolve/main/{}",
        endpoint.trim_end_matches('/'),
        r.org,
        r.repo,
        r.file
    )
}

/// Download `r` to `dest` (temp file + rename) and record its sha256. The hub does not give
/// a checksum we can trust without its API, so the length is what is checked here.
pub(crate) fn fetch(
    client: &Client,
    endpoint: &str,
    token: Option<&str>,
    r: &HfRef,
    dest: &Path,
    progress: bool,
) -> Result<(), HubError> {
    let url = file_url(endpoint, r);
    let mut tmp = TempFile::next_to(dest)?;
    let tmp_path = tmp.path().to_path_buf();
    // Written in 8 MiB pieces: the page cache then keeps the model in large folios,
    // which later mappings fault in 2 MiB at a time (see the snapshot builder).
    let mut w = HashingWriter::new(io::BufWriter::with_capacity(8 << 20, tmp.file()));
    let label = r.file.rsplit('/').next().unwrap_or(&r.file);
    let req = Download {
        url: &url,
        origin: Origin::HuggingFace,
        bearer: token,
        expected_len: None,
        progress,
        label,
    };
    http::download(client, &req, &mut w)?;
    let sha = w.finish().map_err(io_err("write", &tmp_path))?;
    tmp.persist(dest)?;
    record_sha256(dest, &sha);
    Ok(())
}
