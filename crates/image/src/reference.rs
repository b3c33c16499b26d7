//! Image references (`[domain/]path[:tag][@sha256:hex]`): parsing and normalisation to the fully
//! qualified form Podman stores (`busybox` is `docker.io/library/busybox:latest`).

use std::fmt;

use crate::digest::sha256_hex;

/// Registry assumed for names without a domain.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// Tag assumed for names without tag and digest.
pub const DEFAULT_TAG: &str = "latest";

/// Errors of reference parsing.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid image reference \"{reference}\": {reason}")]
    Invalid { reference: String, reason: String },
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host with optional port, normalised (`docker.io`, `localhost`, `127.0.0.1:5000`).
    pub domain: String,
    /// Repository path inside the registry (`library/busybox`).
    pub path: String,
    /// Tag; `latest` when the input had neither tag nor digest.
    pub tag: Option<String>,
    /// Manifest digest `sha256:<hex>`.
    pub digest: Option<String>,
}

fn invalid(reference: &str, reason: impl Into<String>) -> ReferenceError {
    ReferenceError::Invalid {
        reference: reference.to_string(),
        reason: reason.into(),
    }
}

/// `true` when the first component of a name is a registry host rather than a path component.
fn looks_like_domain(component: &str) -> bool {
    component.contains('.')
        || component.contains(':')
        || component == "localhost"
        || component.bytes().any(|b| b.is_ascii_uppercase())
}

fn valid_path_component(c: &str) -> bool {
    // alphanumerics separated by `.`, `_`, `__` or runs of `-`.
    let bytes = c.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !(first.is_ascii_lowercase() || first.is_ascii_digit())
        || !(last.is_ascii_lowercase() || last.is_ascii_digit())
    {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            i += 1;
            continue;
        }
        match b {
            b'.' => i += 1,
            b'_' if bytes.get(i + 1) == Some(&b'_') => i += 2,
            b'_' => i += 1,
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        // A separator must be followed by an alphanumeric.
        match bytes.get(i) {
            Some(n) if n.is_ascii_lowercase() || n.is_ascii_digit() => {}
            _ => return false,
        }
    }
    true
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if host.starts_with('[') && host.ends_with(']') {
        return host.len() > 2;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

impl Reference {
    /// Parses and normalises a reference: adds `docker.io` (and `library/` for one-component
    /// Docker Hub names) and the `latest` tag when neither tag nor digest is given.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(invalid(input, "it is empty"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((name, d)) => {
                if sha256_hex(d).is_none() {
                    return Err(invalid(
                        input,
                        "the digest must be sha256: followed by 64 lower-case hex digits",
                    ));
                }
                (name, Some(d.to_string()))
            }
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                if !valid_tag(tag) {
                    return Err(invalid(input, format!("\"{tag}\" is not a valid tag")));
                }
                (&rest[..last_slash + i], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        let (domain, path) = match name.split_once('/') {
            Some((first, path)) if looks_like_domain(first) => {
                if !valid_domain(first) {
                    return Err(invalid(
                        input,
                        format!("\"{first}\" is not a valid registry host"),
                    ));
                }
                let domain = if first == "index.docker.io" {
                    DEFAULT_DOMAIN
                } else {
                    first
                };
                (domain.to_string(), path.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        if path.is_empty() {
            return Err(invalid(input, "the repository name is empty"));
        }
        for component in path.split('/') {
            if !valid_path_component(component) {
                let reason = if component.bytes().any(|b| b.is_ascii_uppercase()) {
                    "repository names must be lower-case".to_string()
                } else {
                    format!("\"{component}\" is not a valid repository name component")
                };
                return Err(invalid(input, reason));
            }
        }
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            _ => tag,
        };
        Ok(Self {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// `true` when `input` names no registry (`busybox`, `foo/bar:1`): such short names are
    /// looked up under several registries.
    pub fn is_short_name(input: &str) -> bool {
        match input.split_once('/') {
            Some((first, _)) => !looks_like_domain(first),
            None => true,
        }
    }

    /// `domain/path`, the repository without tag or digest.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag or digest to ask a registry for (`latest`, `sha256:..`): the digest wins.
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_like_podman() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("foo/bar"), "docker.io/foo/bar:latest");
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("index.docker.io/library/busybox:1"),
            "docker.io/library/busybox:1"
        );
        assert_eq!(norm("localhost/x"), "localhost/x:latest");
        assert_eq!(
            norm("localhost/stasis-test/busybox:latest"),
            "localhost/stasis-test/busybox:latest"
        );
        assert_eq!(
            norm("127.0.0.1:5000/busybox:v1"),
            "127.0.0.1:5000/busybox:v1"
        );
        assert_eq!(norm("quay.io/a/b_c/d-e:x"), "quay.io/a/b_c/d-e:x");
        let h = "a".repeat(64);
        assert_eq!(
            norm(&format!("busybox@sha256:{h}")),
            format!("docker.io/library/busybox@sha256:{h}")
        );
        let r = Reference::parse(&format!("localhost:5000/x:1@sha256:{h}")).unwrap();
        assert_eq!(r.domain, "localhost:5000");
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.manifest_ref(), format!("sha256:{h}"));
        assert_eq!(r.repository(), "localhost:5000/x");
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:a/b",
            "a//b",
            "-a",
            "a-",
            "a..b",
            "x@sha256:abc",
            "x@md5:00",
            "host:port/x",
            "localhost/",
            "a b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
        let msg = Reference::parse("foo/Bar").unwrap_err().to_string();
        assert_eq!(
            msg,
            "invalid image reference \"foo/Bar\": repository names must be lower-case"
        );
    }

    #[test]
    fn short_names() {
        assert!(Reference::is_short_name("busybox"));
        assert!(Reference::is_short_name("foo/bar:1"));
        assert!(!Reference::is_short_name("localhost/busybox"));
        assert!(!Reference::is_short_name("127.0.0.1:5000/busybox"));
        assert!(!Reference::is_short_name("quay.io/x"));
    }
}
