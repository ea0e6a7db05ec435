//! What a MODEL argument can say, parsed without touching the disk or the network.

use crate::error::HubError;

/// A Hugging Face file reference: `hf:ORG/REPO/FILE.gguf` (FILE may contain `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfRef {
    pub org: String,
    pub repo: String,
    /// Path of the file in the repository, `/`-separated.
    pub file: String,
}

impl HfRef {
    /// `hf:ORG/REPO/FILE` again: the name `thaw list` shows and `resolve` accepts.
    pub fn spec(&self) -> String {
        format!("hf:{}/{}/{}", self.org, self.repo, self.file)
    }

    /// `ORG/REPO/FILE`, the cache path below `$THAW_HOME/models/hf/` and the URL tail.
    pub fn rel_path(&self) -> String {
        format!("{}/{}/{}", self.org, self.repo, self.file)
    }
}

/// The kinds of MODEL argument, by syntax only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// Looks like a path (has a `/`, starts with `.` or `~`, or ends in `.gguf`/`.thaw`).
    Path(String),
    /// A bare name: a known model, or a file already in the cache.
    Name(String),
    /// `hf:ORG/REPO/FILE.gguf`.
    Hf(HfRef),
}

impl ModelSpec {
    /// Classify a MODEL argument. Only `hf:` specs can be malformed.
    pub fn parse(spec: &str) -> Result<ModelSpec, HubError> {
        if let Some(rest) = spec.strip_prefix("hf:") {
            return parse_hf(spec, rest).map(ModelSpec::Hf);
        }
        let looks_like_path = spec.contains('/')
            || spec.contains('\\')
            || spec.starts_with('.')
            || spec.starts_with('~')
            || spec.ends_with(".gguf")
            || spec.ends_with(".thaw");
        if looks_like_path || spec.is_empty() {
            Ok(ModelSpec::Path(spec.to_string()))
        } else {
            Ok(ModelSpec::Name(spec.to_string()))
        }
    }
}

fn parse_hf(spec: &str, rest: &str) -> Result<HfRef, HubError> {
    let bad = |reason: &str| HubError::BadSpec {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.len() < 3 {
        return Err(bad(
            "it needs an organisation, a repository and a file name",
        ));
    }
    for seg in &segments {
        // Each segment becomes a directory name in the cache and a URL path segment:
        // refuse anything that could escape the cache or change the URL's meaning.
        if seg.is_empty() {
            return Err(bad("it has an empty path segment"));
        }
        if *seg == "." || *seg == ".." {
            return Err(bad("'.' and '..' are not allowed in it"));
        }
        if let Some(c) = seg
            .chars()
            .find(|c| c.is_control() || c.is_whitespace() || "\\?#%:\"<>|*".contains(*c))
        {
            return Err(bad(&format!("the character {c:?} is not allowed in it")));
        }
    }
    Ok(HfRef {
        org: segments[0].to_string(),
        repo: segments[1].to_string(),
        file: segments[2..].join("/"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hf_specs() {
        let ModelSpec::Hf(r) = ModelSpec::parse("hf:bartowski/Qwen-GGUF/q4.gguf").unwrap() else {
            panic!("not hf")
        };
        assert_eq!(
            (r.org.as_str(), r.repo.as_str()),
            ("bartowski", "Qwen-GGUF")
        );
        assert_eq!(r.file, "q4.gguf");
        assert_eq!(r.spec(), "hf:bartowski/Qwen-GGUF/q4.gguf");

        let ModelSpec::Hf(r) = ModelSpec::parse("hf:o/r/sub/dir/m.gguf").unwrap() else {
            panic!("not hf")
        };
        assert_eq!(r.file, "sub/dir/m.gguf");
        assert_eq!(r.rel_path(), "o/r/sub/dir/m.gguf");
    }

    #[test]
    fn rejects_bad_hf_specs() {
        for bad in [
            "hf:",
            "hf:org",
            "hf:org/repo",
            "hf:org//f.gguf",
            "hf:org/repo/",
            "hf:org/../f.gguf",
            "hf:org/repo/../../etc/passwd",
            "hf:org/repo/a b.gguf",
            "hf:org/repo/f.gguf?x=1",
            "hf:org/repo/f.gguf#frag",
            "hf:org/re\\po/f.gguf",
        ] {
            let err = ModelSpec::parse(bad).expect_err(bad);
            assert!(matches!(err, HubError::BadSpec { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("hf:ORG/REPO/FILE.gguf"), "{err}");
        }
    }

    #[test]
    fn classifies_paths_and_names() {
        for p in [
            "./m.gguf",
            "/tmp/x",
            "m.gguf",
            "snap.thaw",
            "~/m",
            "dir/m",
            "",
        ] {
            assert_eq!(
                ModelSpec::parse(p).unwrap(),
                ModelSpec::Path(p.into()),
                "{p}"
            );
        }
        for n in ["smollm2", "gemma3-270m", "my_model"] {
            assert_eq!(
                ModelSpec::parse(n).unwrap(),
                ModelSpec::Name(n.into()),
                "{n}"
            );
        }
    }
}
