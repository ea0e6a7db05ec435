//! The gateway's TOML configuration: the `[gateway]` table and `[[deployment]]`s.
//!
//! Errors carry the file, the line and column and the field at fault, so a user can go
//! straight to the mistake. Unknown fields are errors (a typo must not silently fall
//! back to a default).

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use toml::Spanned;

/// A rejected configuration: where and what.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// File name (or `<request>` for a management API body).
    pub origin: String,
    /// 1-based line and column, when known.
    pub line: Option<(usize, usize)>,
    /// The field at fault (`deployment[1].max_replicas`), when known.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some((l, c)) = self.line {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": ")?;
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// Gateway-wide settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    pub host: String,
    pub port: u16,
    /// No API keys needed (local use). Management endpoints are open too.
    pub open: bool,
    /// SQLite file for keys and the usage ledger (relative to the config file).
    pub db: PathBuf,
    /// How long shutdown lets running requests finish.
    #[serde(with = "dur")]
    pub shutdown_grace: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            open: false,
            db: PathBuf::from("thaw.db"),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// One deployment: the `model` name clients ask for and how to run its replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    pub name: String,
    /// A known model name, a .gguf path or a .thaw snapshot, run by `thaw worker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// An external OpenAI-compatible server: a shell command with `{port}` in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Health path of an external server (200 = ready).
    #[serde(default = "d_health")]
    pub health: String,
    /// The `model` sent to an external server (default: the deployment name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_model: Option<String>,
    #[serde(default = "d_start_timeout", with = "dur")]
    pub start_timeout: Duration,
    #[serde(default)]
    pub min_replicas: usize,
    #[serde(default = "d_one")]
    pub max_replicas: usize,
    #[serde(default = "d_idle", with = "dur")]
    pub idle_timeout: Duration,
    /// Requests one replica runs at once.
    #[serde(default = "d_concurrency")]
    pub max_concurrency: usize,
    /// Requests that may wait for a replica; more get 429.
    #[serde(default = "d_queue")]
    pub max_queue: usize,
    /// Waiting requests per replica above which another replica starts.
    #[serde(default = "d_one")]
    pub scale_up_queue: usize,
    /// System prompt added to chat requests that have none (the worker's prefix cache
    /// keeps its KV state warm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// Price in currency units per million prompt / completion tokens.
    #[serde(default)]
    pub price_input: f64,
    #[serde(default)]
    pub price_output: f64,
    /// Worker kernel threads (0 = all cores) and context size (0 = model's, ≤ 4096).
    #[serde(default)]
    pub threads: usize,
    #[serde(default)]
    pub ctx_size: usize,
}

fn d_health() -> String {
    "/health".into()
}
fn d_start_timeout() -> Duration {
    Duration::from_secs(60)
}
fn d_one() -> usize {
    1
}
fn d_idle() -> Duration {
    Duration::from_secs(300)
}
fn d_concurrency() -> usize {
    4
}
fn d_queue() -> usize {
    64
}

impl DeploymentSpec {
    /// Checks that serde cannot express; `Err((field, message))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, m: String| Err((f.to_string(), m));
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
        {
            return bad(
                "name",
                format!(
                    "`{}` is not a valid name (letters, digits and - _ . : / only)",
                    self.name
                ),
            );
        }
        match (&self.source, &self.command) {
            (None, None) => return bad("source", "set `source` (a model) or `command`".into()),
            (Some(_), Some(_)) => {
                return bad(
                    "command",
                    "set either `source` or `command`, not both".into(),
                );
            }
            (None, Some(c)) if !c.contains("{port}") => {
                return bad(
                    "command",
                    "must contain `{port}` (where the server should listen)".into(),
                );
            }
            _ => {}
        }
        if !self.health.starts_with('/') {
            return bad("health", "must be a path starting with `/`".into());
        }
        if self.max_replicas == 0 {
            return bad("max_replicas", "must be at least 1".into());
        }
        if self.min_replicas > self.max_replicas {
            return bad(
                "min_replicas",
                format!(
                    "{} is more than max_replicas ({})",
                    self.min_replicas, self.max_replicas
                ),
            );
        }
        if self.max_concurrency == 0 {
            return bad("max_concurrency", "must be at least 1".into());
        }
        if self.scale_up_queue == 0 {
            return bad("scale_up_queue", "must be at least 1".into());
        }
        if self.start_timeout.is_zero() {
            return bad("start_timeout", "must be more than 0".into());
        }
        for (f, p) in [
            ("price_input", self.price_input),
            ("price_output", self.price_output),
        ] {
            if !p.is_finite() || p < 0.0 {
                return bad(f, format!("{p} is not a price (≥ 0)"));
            }
        }
        Ok(())
    }

    /// The `model` the replica expects.
    pub fn upstream_model(&self) -> &str {
        self.upstream_model.as_deref().unwrap_or(&self.name)
    }
}

/// The whole file.
#[derive(Debug, Clone)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub deployments: Vec<DeploymentSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    gateway: GatewayConfig,
    #[serde(default)]
    deployment: Vec<Spanned<DeploymentSpec>>,
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

/// Parse and validate deployments (and the gateway table) from TOML `text`.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let msg = e.message().trim().to_string();
        // serde's messages name the field; keep the first line as the message.
        ConfigError {
            origin: origin.to_string(),
            line: e.span().map(|s| line_col(text, s.start)),
            field: None,
            message: msg,
        }
    })?;
    let mut seen = HashSet::new();
    let mut deployments = Vec::with_capacity(raw.deployment.len());
    for (i, d) in raw.deployment.into_iter().enumerate() {
        let pos = line_col(text, d.span().start);
        let spec = d.into_inner();
        let err = |field: String, message: String| ConfigError {
            origin: origin.to_string(),
            line: Some(pos),
            field: Some(format!("deployment[{i}].{field}")),
            message,
        };
        spec.validate().map_err(|(f, m)| err(f, m))?;
        if !seen.insert(spec.name.clone()) {
            return Err(err(
                "name".into(),
                format!("`{}` is deployed twice", spec.name),
            ));
        }
        deployments.push(spec);
    }
    Ok(Config {
        gateway: raw.gateway,
        deployments,
    })
}

/// Read and parse a file; a relative `db` is resolved against the file's folder.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        origin: origin.clone(),
        line: None,
        field: None,
        message: format!("cannot read: {e}"),
    })?;
    let mut c = parse(&text, &origin)?;
    if c.gateway.db.is_relative() {
        let dir = path.parent().unwrap_or(Path::new("."));
        c.gateway.db = dir.join(&c.gateway.db);
    }
    Ok(c)
}

/// Durations as seconds (`30`, `0.5`) or strings with a unit (`"500ms"`, `"30s"`,
/// `"5m"`, `"1h"`).
pub mod dur {
    use super::*;

    pub fn parse(s: &str) -> Option<Duration> {
        let s = s.trim();
        let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, "s"),
        };
        let n: f64 = num.trim().parse().ok()?;
        let secs = match unit {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86400.0,
            _ => return None,
        };
        (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Float(f64),
        Str(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let bad = |s: &str| {
            serde::de::Error::custom(format!(
                "`{s}` is not a duration (seconds, or a string like \"500ms\", \"30s\", \"5m\")"
            ))
        };
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Duration::from_secs(n)),
            Raw::Float(f) if f.is_finite() && f >= 0.0 => Ok(Duration::from_secs_f64(f)),
            Raw::Float(f) => Err(bad(&f.to_string())),
            Raw::Str(s) => parse(&s).ok_or_else(|| bad(&s)),
        }
    }

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let c = parse(
            r#"
[gateway]
port = 9000
open = true

[[deployment]]
name = "smollm2"
source = "smollm2"
idle_timeout = "500ms"
max_replicas = 2
price_input = 0.1

[[deployment]]
name = "ext"
command = "thaw serve smollm2 --port {port}"
start_timeout = 30
"#,
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.gateway.port, 9000);
        assert!(c.gateway.open);
        assert_eq!(c.deployments.len(), 2);
        assert_eq!(c.deployments[0].idle_timeout, Duration::from_millis(500));
        assert_eq!(c.deployments[1].start_timeout, Duration::from_secs(30));
        assert_eq!(c.deployments[1].upstream_model(), "ext");
    }

    #[test]
    fn unknown_field_names_line() {
        let e = parse(
            "[[deployment]]\nname = \"a\"\nsource = \"x\"\nmax_replica = 3\n",
            "t.toml",
        )
        .unwrap_err();
        assert_eq!(e.line.map(|l| l.0), Some(4), "{e}");
        assert!(e.to_string().contains("max_replica"), "{e}");
    }

    #[test]
    fn semantic_error_names_field_and_deployment_line() {
        let e = parse(
            "[[deployment]]\nname = \"a\"\nsource = \"x\"\n\n[[deployment]]\nname = \"b\"\nsource = \"x\"\nmin_replicas = 3\nmax_replicas = 2\n",
            "t.toml",
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("deployment[1].min_replicas"));
        assert_eq!(e.line.map(|l| l.0), Some(5), "{e}");
        let e = parse(
            "[[deployment]]\nname = \"a\"\nidle_timeout = \"3 weeks\"\nsource = \"x\"\n",
            "t.toml",
        )
        .unwrap_err();
        assert_eq!(e.line.map(|l| l.0), Some(3), "{e}");
        let e = parse("[[deployment]]\nname = \"a\"\ncommand = \"srv\"\n", "t").unwrap_err();
        assert!(e.to_string().contains("{port}"), "{e}");
        let e = parse("[[deployment]]\nname = \"a\"\nsource = \"x\"\n[[deployment]]\nname = \"a\"\nsource = \"y\"\n", "t").unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(dur::parse("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(dur::parse("2m"), Some(Duration::from_secs(120)));
        assert_eq!(dur::parse("1d"), Some(Duration::from_secs(86400)));
        assert_eq!(dur::parse("x"), None);
        assert_eq!(dur::parse("-1s"), None);
    }
}
