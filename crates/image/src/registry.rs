//! A small client of the OCI distribution API: manifests and blobs with anonymous access,
//! HTTP basic auth and bearer tokens.
//!
//! HTTP crate: `ureq` 3 (sync, rustls, no gzip feature). stasis is a daemonless CLI that pulls
//! one image at a time and streams every blob straight into the unpacker; a blocking
//! `impl Read` body fits that pipeline exactly, while `reqwest`/`hyper` would pull in an async
//! runtime (tokio) for no benefit. rustls avoids linking OpenSSL; the gzip feature stays off so
//! no transparent `Content-Encoding` decoding can alter the bytes whose digests we check.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use base64::Engine as _;
use ureq::http::{Response, StatusCode};

use crate::digest::read_limited;
use crate::PullOptions;

/// Errors of registry access.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {host} is unreachable: {reason} (is it running? plain HTTP needs --tls-verify=false)")]
    Unreachable { host: String, reason: String },
    #[error("TLS connection to registry {host} failed: {detail} (a plain HTTP registry needs --tls-verify=false)")]
    Tls { host: String, detail: String },
    #[error("registry {host}: {detail}")]
    Http { host: String, detail: String },
    #[error("registry {host} requires authentication for {what}: pass credentials with --creds USER:PASSWORD")]
    AuthRequired { host: String, what: String },
    #[error("registry {host} rejected the credentials of user \"{user}\" for {what}: check the user name and password")]
    BadCredentials {
        host: String,
        user: String,
        what: String,
    },
    #[error("token server {realm} of registry {host} failed: {detail}")]
    Token {
        host: String,
        realm: String,
        detail: String,
    },
    #[error("{what} not found in registry {host}: check the name and tag")]
    NotFound { host: String, what: String },
    #[error("registry {host} answered {status} for {what}: {body}")]
    Status {
        host: String,
        what: String,
        status: u16,
        body: String,
    },
}

/// One challenge of a `WWW-Authenticate` header: scheme (lower-cased) and parameters
/// (lower-cased names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `bearer`, `basic`, ...
    pub scheme: String,
    /// `realm`, `service`, `scope`, ...
    pub params: BTreeMap<String, String>,
}

/// Parses a `WWW-Authenticate` header value (RFC 7235): one or more challenges, each a scheme
/// followed by comma-separated `name=value` or `name="quoted \"value\""` parameters.
pub fn parse_www_authenticate(header: &str) -> Vec<Challenge> {
    let chars: Vec<char> = header.chars().collect();
    let mut i = 0;
    let mut out: Vec<Challenge> = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && (chars[*i].is_whitespace() || chars[*i] == ',') {
            *i += 1;
        }
    };
    let is_token = |c: char| !c.is_whitespace() && c != ',' && c != '=' && c != '"';
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && is_token(chars[i]) {
            i += 1;
        }
        let token: String = chars[start..i].iter().collect();
        if token.is_empty() {
            i += 1; // stray character
            continue;
        }
        // Look past spaces: `=` makes the token a parameter name, else it is a new scheme.
        let mut j = i;
        while j < chars.len() && chars[j] == ' ' {
            j += 1;
        }
        let is_param = j < chars.len() && chars[j] == '=' && !out.is_empty();
        // `token68` values such as `Basic abc==` end with `=`; treat them as params only when a
        // scheme is open and something other than `=` follows.
        if !is_param {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
            continue;
        }
        i = j + 1;
        while i < chars.len() && chars[i] == ' ' {
            i += 1;
        }
        let mut value = String::new();
        if i < chars.len() && chars[i] == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                value.push(chars[i]);
                i += 1;
            }
            i += 1; // closing quote
        } else {
            while i < chars.len() && chars[i] != ',' && !chars[i].is_whitespace() {
                value.push(chars[i]);
                i += 1;
            }
        }
        if let Some(last) = out.last_mut() {
            last.params.insert(token.to_ascii_lowercase(), value);
        }
    }
    out
}

/// Percent-encodes a query parameter value.
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A session with one repository of one registry; remembers the authorization it obtained.
pub(crate) struct Client {
    agent: ureq::Agent,
    /// `http(s)://host[:port]`
    base: String,
    /// Registry as the user named it, for messages.
    host: String,
    repository: String,
    tls_verify: bool,
    username: Option<String>,
    password: Option<String>,
    authorization: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("repository", &self.repository)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `domain` as in a reference (`docker.io` is served by `registry-1.docker.io`).
    pub(crate) fn new(domain: &str, repository: &str, opts: &PullOptions) -> Self {
        let endpoint = if domain == crate::reference::DEFAULT_DOMAIN {
            "registry-1.docker.io"
        } else {
            domain
        };
        let scheme = if opts.tls_verify { "https" } else { "http" };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .user_agent(concat!("stasis/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self {
            agent,
            base: format!("{scheme}://{endpoint}"),
            host: domain.to_string(),
            repository: repository.to_string(),
            tls_verify: opts.tls_verify,
            username: opts.username.clone(),
            password: opts.password.clone(),
            authorization: None,
        }
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    fn transport_error(&self, e: ureq::Error) -> RegistryError {
        let host = self.host.clone();
        let unreachable = |reason: String| RegistryError::Unreachable {
            host: host.clone(),
            reason,
        };
        match e {
            ureq::Error::Io(io) => match io.kind() {
                std::io::ErrorKind::ConnectionRefused => unreachable("connection refused".into()),
                std::io::ErrorKind::TimedOut => unreachable("connection timed out".into()),
                _ => unreachable(io.to_string()),
            },
            ureq::Error::ConnectionFailed => unreachable("connection failed".into()),
            ureq::Error::HostNotFound => unreachable("host not found".into()),
            ureq::Error::Timeout(t) => unreachable(format!("timed out ({t})")),
            ureq::Error::Tls(d) => RegistryError::Tls {
                host,
                detail: d.to_string(),
            },
            ureq::Error::Rustls(e) => RegistryError::Tls {
                host,
                detail: e.to_string(),
            },
            ureq::Error::Protocol(p) if self.tls_verify => RegistryError::Tls {
                host,
                detail: p.to_string(),
            },
            other => RegistryError::Http {
                host,
                detail: other.to_string(),
            },
        }
    }

    fn send(
        &self,
        url: &str,
        accept: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<Response<ureq::Body>, RegistryError> {
        let mut req = self.agent.get(url);
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        if let Some(a) = authorization {
            req = req.header("Authorization", a);
        }
        req.call().map_err(|e| self.transport_error(e))
    }

    fn basic(&self) -> Option<String> {
        let user = self.username.as_deref()?;
        let pass = self.password.as_deref().unwrap_or("");
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        Some(format!("Basic {b64}"))
    }

    fn bad_credentials(&self, what: &str) -> RegistryError {
        match &self.username {
            Some(user) => RegistryError::BadCredentials {
                host: self.host.clone(),
                user: user.clone(),
                what: what.to_string(),
            },
            None => RegistryError::AuthRequired {
                host: self.host.clone(),
                what: what.to_string(),
            },
        }
    }

    fn fetch_token(&self, challenge: &Challenge, what: &str) -> Result<String, RegistryError> {
        let realm = challenge.params.get("realm").cloned().unwrap_or_default();
        let token_err = |detail: String| RegistryError::Token {
            host: self.host.clone(),
            realm: realm.clone(),
            detail,
        };
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(token_err("the realm is not an http(s) URL".into()));
        }
        let scope = challenge
            .params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        let mut url = realm.clone();
        url.push(if url.contains('?') { '&' } else { '?' });
        if let Some(service) = challenge.params.get("service") {
            url.push_str(&format!("service={}&", encode_query(service)));
        }
        url.push_str(&format!("scope={}", encode_query(&scope)));
        let mut req = self.agent.get(&url);
        if let Some(basic) = self.basic() {
            req = req.header("Authorization", basic);
        }
        let mut resp = req.call().map_err(|e| token_err(e.to_string()))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.bad_credentials(what));
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| token_err(e.to_string()))?;
        if !status.is_success() {
            return Err(token_err(format!("status {status}: {}", snippet(&body))));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| token_err(format!("bad answer: {e}")))?;
        parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| token_err("the answer holds no token".into()))
    }

    /// GET `/v2/<repository>/<kind>/<reference>` with authentication as the registry asks for it.
    /// `what` names the object in messages.
    pub(crate) fn get(
        &mut self,
        kind: &str,
        reference: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<Response<ureq::Body>, RegistryError> {
        let url = format!("{}/v2/{}/{kind}/{reference}", self.base, self.repository);
        let mut resp = self.send(&url, accept, self.authorization.as_deref())?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let challenges: Vec<Challenge> = resp
                .headers()
                .get_all("www-authenticate")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(parse_www_authenticate)
                .collect();
            let retried_with =
                if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
                    Some(format!("Bearer {}", self.fetch_token(bearer, what)?))
                } else if challenges.iter().any(|c| c.scheme == "basic") {
                    Some(self.basic().ok_or_else(|| self.bad_credentials(what))?)
                } else {
                    None
                };
            if let Some(auth) = retried_with {
                if self.authorization.as_deref() != Some(auth.as_str()) {
                    resp = self.send(&url, accept, Some(&auth))?;
                    self.authorization = Some(auth);
                }
            }
            if resp.status() == StatusCode::UNAUTHORIZED {
                return Err(self.bad_credentials(what));
            }
        }
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                host: self.host.clone(),
                what: what.to_string(),
            });
        }
        if status == StatusCode::FORBIDDEN {
            return Err(self.bad_credentials(what));
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(4096)
            .lossy_utf8(true)
            .read_to_vec()
            .unwrap_or_default();
        Err(RegistryError::Status {
            host: self.host.clone(),
            what: what.to_string(),
            status: status.as_u16(),
            body: snippet(&body),
        })
    }

    /// A manifest's bytes and Content-Type.
    pub(crate) fn manifest(
        &mut self,
        reference: &str,
        what: &str,
    ) -> Result<(Vec<u8>, Option<String>), RegistryError> {
        let resp = self.get(
            "manifests",
            reference,
            Some(crate::manifest::ACCEPT_MANIFESTS),
            what,
        )?;
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut reader = resp.into_body().into_reader();
        let bytes = read_limited(&mut reader, crate::archive::METADATA_LIMIT).map_err(|e| {
            RegistryError::Http {
                host: self.host.clone(),
                detail: format!("reading {what}: {e}"),
            }
        })?;
        Ok((bytes, content_type))
    }

    /// A streaming reader of a blob and its Content-Length, if sent.
    pub(crate) fn blob(
        &mut self,
        digest: &str,
        what: &str,
    ) -> Result<(Box<dyn Read + Send>, Option<u64>), RegistryError> {
        let resp = self.get("blobs", digest, None, what)?;
        let len = resp.body().content_length();
        Ok((Box::new(resp.into_body().into_reader()), len))
    }
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    if s.is_empty() {
        "(empty answer)".into()
    } else {
        s.chars().take(300).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let c = parse_www_authenticate(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.docker.io/token");
        assert_eq!(c[0].params["service"], "registry.docker.io");
        assert_eq!(c[0].params["scope"], "repository:library/busybox:pull");
    }

    #[test]
    fn parses_basic_and_several_challenges() {
        let c = parse_www_authenticate(r#"Basic realm="Registry Realm""#);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].params["realm"], "Registry Realm");
        let c = parse_www_authenticate(
            r#"Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm=simple"#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "newauth");
        assert_eq!(c[0].params["type"], "1");
        assert_eq!(c[0].params["title"], r#"Login to "apps""#);
        assert_eq!(c[1].scheme, "basic");
        assert_eq!(c[1].params["realm"], "simple");
    }

    #[test]
    fn tolerates_garbage() {
        assert!(parse_www_authenticate("").is_empty());
        let c = parse_www_authenticate("Bearer");
        assert_eq!(c.len(), 1);
        assert!(c[0].params.is_empty());
        let c = parse_www_authenticate(r#"Bearer realm="unterminated"#);
        assert_eq!(c[0].params["realm"], "unterminated");
        let _ = parse_www_authenticate("=,=\"\\");
    }

    #[test]
    fn query_encoding() {
        assert_eq!(
            encode_query("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }
}
