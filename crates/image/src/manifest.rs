//! Manifests and indexes (OCI and Docker v2 schema 2): parsing, and choosing the manifest for
//! a platform from an index or manifest list.

use std::collections::HashMap;

use serde::Deserialize;

use crate::digest::sha256_hex;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The `Accept` header for manifest requests: every kind we can read.
pub(crate) const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Errors of manifest handling.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{what} is not a valid manifest: {detail}")]
    Invalid { what: String, detail: String },
    #[error("{what} has media type {media_type}, which stasis cannot read (only OCI and Docker v2 schema 2 manifests and indexes)")]
    Unsupported { what: String, media_type: String },
    #[error("{what} has no image for {wanted} (it has: {available}): pull an image built for this platform")]
    NoPlatform {
        what: String,
        wanted: String,
        available: String,
    },
}

/// A content descriptor, as found in manifests and indexes.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// A platform (`linux/amd64`, `linux/arm64/v8`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    /// GOOS-style operating system name.
    pub os: String,
    /// GOARCH-style architecture name.
    pub architecture: String,
    /// Architecture variant (`v7`, `v8`).
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this machine in GOOS/GOARCH terms.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Self {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }

    fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && match (&self.variant, &other.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// A parsed manifest document.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// An image manifest: config and layers, bottom layer first.
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    /// An index or manifest list.
    Index { manifests: Vec<Descriptor> },
}

/// Parses a manifest or index. `content_type` is the HTTP Content-Type when there is one; the
/// document's own `mediaType` wins, and without either the shape decides.
pub(crate) fn parse(
    what: &str,
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<Parsed, ManifestError> {
    let invalid = |detail: String| ManifestError::Invalid {
        what: what.to_string(),
        detail,
    };
    let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    let media_type = raw
        .media_type
        .clone()
        .or_else(|| {
            content_type
                .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
                .filter(|c| c.starts_with("application/vnd."))
        })
        .unwrap_or_default();
    let unsupported = || ManifestError::Unsupported {
        what: what.to_string(),
        media_type: media_type.clone(),
    };
    let descriptors_ok = |ds: &[Descriptor]| -> Result<(), ManifestError> {
        for d in ds {
            if sha256_hex(&d.digest).is_none() {
                return Err(invalid(format!(
                    "descriptor digest \"{}\" is not sha256:<64 hex digits>",
                    d.digest
                )));
            }
        }
        Ok(())
    };
    let is_index = match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        "" => raw.manifests.is_some(),
        _ => return Err(unsupported()),
    };
    if raw.schema_version != Some(2) {
        return Err(match raw.schema_version {
            Some(1) => ManifestError::Unsupported {
                what: what.to_string(),
                media_type: "application/vnd.docker.distribution.manifest.v1+json".into(),
            },
            _ => invalid("schemaVersion is not 2".into()),
        });
    }
    if is_index {
        let manifests = raw
            .manifests
            .ok_or_else(|| invalid("an index without \"manifests\"".into()))?;
        descriptors_ok(&manifests)?;
        Ok(Parsed::Index { manifests })
    } else {
        let config = raw
            .config
            .ok_or_else(|| invalid("a manifest without \"config\"".into()))?;
        let layers = raw.layers.unwrap_or_default();
        descriptors_ok(std::slice::from_ref(&config))?;
        descriptors_ok(&layers)?;
        Ok(Parsed::Image { config, layers })
    }
}

/// Chooses the manifest for `platform` from an index: an exact variant match first, then any
/// variant of the architecture. Attestation manifests (`unknown/unknown`) never match.
pub fn select_manifest<'a>(
    what: &str,
    manifests: &'a [impl AsDescriptor],
    platform: &Platform,
) -> Result<&'a str, ManifestError> {
    let exact = manifests.iter().find(|m| {
        m.platform()
            .is_some_and(|p| p.matches(platform) && p.variant == platform.variant)
    });
    let loose = || {
        manifests
            .iter()
            .find(|m| m.platform().is_some_and(|p| p.matches(platform)))
    };
    match exact.or_else(loose) {
        Some(m) => Ok(m.digest()),
        None => Err(ManifestError::NoPlatform {
            what: what.to_string(),
            wanted: platform.to_string(),
            available: manifests
                .iter()
                .filter_map(|m| m.platform().map(|p| p.to_string()))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Access to the fields of an index entry that [`select_manifest`] needs.
pub trait AsDescriptor {
    /// The entry's `sha256:..` digest.
    fn digest(&self) -> &str;
    /// The entry's platform, if it names one.
    fn platform(&self) -> Option<&Platform>;
}

impl AsDescriptor for Descriptor {
    fn digest(&self) -> &str {
        &self.digest
    }
    fn platform(&self) -> Option<&Platform> {
        self.platform.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: char) -> String {
        format!("sha256:{}", n.to_string().repeat(64))
    }

    fn index(entries: &[(&str, &str, Option<&str>, char)]) -> String {
        let ms: Vec<String> = entries
            .iter()
            .map(|(os, arch, variant, n)| {
                let v = variant.map_or(String::new(), |v| format!(",\"variant\":\"{v}\""));
                format!(
                    "{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{}\",\"size\":1,\"platform\":{{\"os\":\"{os}\",\"architecture\":\"{arch}\"{v}}}}}",
                    d(*n)
                )
            })
            .collect();
        format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[{}]}}",
            ms.join(",")
        )
    }

    fn pick(doc: &str, platform: &Platform) -> Result<String, ManifestError> {
        match parse("test index", doc.as_bytes(), None)? {
            Parsed::Index { manifests } => {
                select_manifest("test index", &manifests, platform).map(str::to_string)
            }
            Parsed::Image { .. } => panic!("parsed as image"),
        }
    }

    #[test]
    fn picks_linux_amd64() {
        let doc = index(&[
            ("linux", "arm", Some("v7"), 'a'),
            ("unknown", "unknown", None, 'b'),
            ("linux", "amd64", None, 'c'),
            ("linux", "arm64", Some("v8"), 'd'),
        ]);
        let amd64 = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        };
        assert_eq!(pick(&doc, &amd64).unwrap(), d('c'));
        let arm64 = Platform {
            architecture: "arm64".into(),
            ..amd64.clone()
        };
        assert_eq!(pick(&doc, &arm64).unwrap(), d('d'));
        let s390 = Platform {
            architecture: "s390x".into(),
            ..amd64
        };
        let err = pick(&doc, &s390).unwrap_err().to_string();
        assert!(err.contains("no image for linux/s390x"), "{err}");
        assert!(err.contains("linux/arm/v7, unknown/unknown, linux/amd64, linux/arm64/v8"));
    }

    #[test]
    fn variant_exact_match_wins() {
        let doc = index(&[
            ("linux", "arm", Some("v6"), 'a'),
            ("linux", "arm", Some("v7"), 'b'),
        ]);
        let v7 = Platform {
            os: "linux".into(),
            architecture: "arm".into(),
            variant: Some("v7".into()),
        };
        assert_eq!(pick(&doc, &v7).unwrap(), d('b'));
    }

    #[test]
    fn parses_docker_manifest_by_content_type() {
        let doc = format!(
            "{{\"schemaVersion\":2,\"config\":{{\"mediaType\":\"x\",\"digest\":\"{}\",\"size\":3}},\"layers\":[{{\"digest\":\"{}\",\"size\":9}}]}}",
            d('1'),
            d('2')
        );
        match parse("m", doc.as_bytes(), Some(DOCKER_MANIFEST)).unwrap() {
            Parsed::Image { config, layers } => {
                assert_eq!(config.digest, d('1'));
                assert_eq!(layers.len(), 1);
                assert_eq!(layers[0].size, 9);
            }
            Parsed::Index { .. } => panic!("index"),
        }
    }

    #[test]
    fn rejects_schema1_and_bad_digests() {
        let v1 = "{\"schemaVersion\":1,\"name\":\"x\",\"fsLayers\":[]}";
        let e = parse("m", v1.as_bytes(), None).unwrap_err().to_string();
        assert!(e.contains("manifest.v1+json"), "{e}");
        let bad = "{\"schemaVersion\":2,\"config\":{\"digest\":\"sha256:zz\"},\"layers\":[]}";
        assert!(parse("m", bad.as_bytes(), None).is_err());
        assert!(parse("m", b"not json", None).is_err());
        let other = "{\"schemaVersion\":2,\"mediaType\":\"text/plain\"}";
        assert!(parse("m", other.as_bytes(), None).is_err());
    }
}
