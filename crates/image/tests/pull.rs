//! Pulling from a real registry (Debian's docker-registry, fed by `podman push`) and from a
//! small in-test registry that demands bearer tokens.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use stasis_image::{ImageError, PullOptions};

const SOURCE: &str = "localhost/stasis-test/busybox:latest";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running docker-registry; killed when dropped, also when the test panics.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Starts a registry on a free port; with `htpasswd` = (user, password) it requires basic
    /// auth.
    fn start(htpasswd: Option<(&str, &str)>) -> Self {
        require_tool("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: stasis-test-secret\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = htpasswd {
            let hash = bcrypt::hash(password, 5).unwrap();
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: stasis-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting docker-registry: run scripts/install-deps.sh");
        let mut reg = Registry {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = reg.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = reg.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("docker-registry exited with {status}: {err}");
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn push(&self, target: &str, creds: Option<&str>) {
        let mut cmd = Command::new("podman");
        cmd.args(["push", "-q", "--tls-verify=false"]);
        if let Some(c) = creds {
            cmd.args(["--creds", c]);
        }
        let out = cmd
            .arg(SOURCE)
            .arg(format!("{}/{target}", self.addr()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "podman push failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn plain_http() -> PullOptions {
    PullOptions {
        tls_verify: false,
        ..Default::default()
    }
}

#[test]
fn pull_from_registry_gets_podmans_id() {
    test_images();
    require_tool("podman");
    let reg = Registry::start(None);
    reg.push("busybox:latest", None);
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path());
    let reference = format!("{}/busybox:latest", reg.addr());
    let img = s.pull(&reference, &plain_http()).unwrap();
    assert_eq!(img.id, podman_id());
    assert_eq!(img.names, vec![reference.clone()]);
    let digest = img.digest.clone().expect("manifest digest");
    assert!(s.layer_dirs(&img).unwrap()[0].join("bin/busybox").is_file());
    // Pulled by tag, found by digest (of its repository only).
    let at_digest = |repo: &str| format!("{}/{repo}@{digest}", reg.addr());
    assert_eq!(s.resolve(&at_digest("busybox")).unwrap().id, img.id);
    assert!(s.resolve(&at_digest("other")).is_err());
    assert_eq!(
        s.resolve(&format!("{}/busybox", reg.addr())).unwrap().id,
        img.id
    );

    // By digest; and the archive of the same image shares the (gzip-pushed) layer.
    let by_digest = format!("{}/busybox@{digest}", reg.addr());
    assert_eq!(s.pull(&by_digest, &plain_http()).unwrap().id, podman_id());
    let loaded = s.load(&test_images().join("busybox-docker.tar")).unwrap();
    assert_eq!(loaded[0].id, img.id);
    assert_eq!(layer_entries(root.path()).len(), 1);
    assert_eq!(s.list().unwrap().len(), 1);

    // Unknown tag, TLS against a plain-HTTP registry.
    let before = snapshot(root.path());
    let err = s
        .pull(&format!("{}/busybox:nope", reg.addr()), &plain_http())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not found in registry"), "{err}");
    let err = s
        .pull(&reference, &PullOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("--tls-verify=false"), "{err}");
    assert_eq!(snapshot(root.path()), before);
}

#[test]
fn unreachable_registry_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path());
    let port = free_port();
    let err = s
        .pull(&format!("127.0.0.1:{port}/busybox"), &plain_http())
        .unwrap_err();
    assert!(matches!(err, ImageError::Registry(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("registry 127.0.0.1:{port} is unreachable: connection refused (is it running? plain HTTP needs --tls-verify=false)")
    );
}

#[test]
fn basic_auth() {
    test_images();
    let reg = Registry::start(Some(("stasis", "s3cret")));
    reg.push("auth/busybox:v1", Some("stasis:s3cret"));
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path());
    let reference = format!("{}/auth/busybox:v1", reg.addr());
    let before = snapshot(root.path());

    let err = s.pull(&reference, &plain_http()).unwrap_err().to_string();
    assert!(
        err.contains("requires authentication") && err.contains("--creds"),
        "{err}"
    );
    let wrong = PullOptions {
        username: Some("stasis".into()),
        password: Some("wrong".into()),
        ..plain_http()
    };
    let err = s.pull(&reference, &wrong).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("registry {} rejected the credentials of user \"stasis\" for image {reference}: check the user name and password", reg.addr())
    );
    assert_eq!(snapshot(root.path()), before);

    let right = PullOptions {
        password: Some("s3cret".into()),
        ..wrong
    };
    assert_eq!(s.pull(&reference, &right).unwrap().id, podman_id());
}

// ---- a small registry in the test: bearer tokens, an index, a corrupt blob ----

const TOKEN: &str = "tok-4711";

struct FakeRegistry {
    port: u16,
}

/// Serves the blobs of the extracted oci-archive in `layout`. Repository `busybox`:
/// tag `latest` is the real manifest, tag `multi` an index (arm64 + amd64 entries).
/// Repository `corrupt` serves the layer with another gzip MTIME (valid, same size, other
/// digest) and without Content-Length; `resized` serves it uncompressed. Every /v2/ request needs
/// `Bearer tok-4711`, which /token hands out for user `u` with password `p`.
fn fake_registry(layout: PathBuf, index_json: Vec<u8>) -> FakeRegistry {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let layout = layout.clone();
            let index_json = index_json.clone();
            std::thread::spawn(move || {
                let _ = serve(conn, &layout, &index_json, port);
            });
        }
    });
    FakeRegistry { port }
}

fn respond(
    s: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| *k == "X-No-Length") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)
}

fn serve(mut s: TcpStream, layout: &Path, index_json: &[u8], port: u16) -> std::io::Result<()> {
    let mut reader = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut auth = String::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                auth = v.trim().to_string();
            }
        }
    }
    if let Some(query) = path.strip_prefix("/token?") {
        use base64::Engine;
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("u:p")
        );
        if auth != basic
            || !query.contains("service=fake")
            || !query.contains("scope=repository%3A")
        {
            return respond(&mut s, "401 Unauthorized", &[], b"{}");
        }
        let body = format!("{{\"token\":\"{TOKEN}\"}}");
        return respond(&mut s, "200 OK", &[], body.as_bytes());
    }
    if auth != format!("Bearer {TOKEN}") {
        let repo = path.split('/').nth(2).unwrap_or("");
        let challenge = format!(
            "Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake\",scope=\"repository:{repo}:pull\""
        );
        return respond(
            &mut s,
            "401 Unauthorized",
            &[("WWW-Authenticate", challenge)],
            b"{}",
        );
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // v2 / repo / kind / ref
    let (repo, kind, reference) = match parts.as_slice() {
        ["v2", repo, kind, reference] => (*repo, *kind, *reference),
        _ => return respond(&mut s, "404 Not Found", &[], b"{}"),
    };
    let blob = |digest: &str| {
        std::fs::read(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
    };
    match kind {
        "manifests" if reference == "multi" => respond(
            &mut s,
            "200 OK",
            &[(
                "Content-Type",
                "application/vnd.oci.image.index.v1+json".into(),
            )],
            index_json,
        ),
        "manifests" => {
            let index: serde_json::Value =
                serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
            let digest = index["manifests"][0]["digest"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if reference != "latest" && reference != digest {
                return respond(&mut s, "404 Not Found", &[], b"{}");
            }
            let body = blob(&digest)?;
            respond(
                &mut s,
                "200 OK",
                &[(
                    "Content-Type",
                    "application/vnd.oci.image.manifest.v1+json".into(),
                )],
                &body,
            )
        }
        "blobs" => match blob(reference) {
            Ok(mut body) => {
                let big = body.len() > 100_000;
                if repo == "corrupt" && big {
                    // The gzip header's MTIME: same size, still valid, other digest.
                    body[4] ^= 0xff;
                }
                if repo == "resized" && big {
                    // Same content, other bytes: a valid (uncompressed) tar whose digest is not
                    // the one in the manifest.
                    let (_, mut plain) =
                        stasis_tar::decompress(std::io::Cursor::new(body)).unwrap();
                    body = Vec::new();
                    plain.read_to_end(&mut body)?;
                }
                // "corrupt" sends no Content-Length: the body ends when the connection closes.
                let headers = if repo == "corrupt" && big {
                    vec![("X-No-Length", String::new())]
                } else {
                    Vec::new()
                };
                respond(&mut s, "200 OK", &headers, &body)
            }
            Err(_) => respond(&mut s, "404 Not Found", &[], b"{}"),
        },
        _ => respond(&mut s, "404 Not Found", &[], b"{}"),
    }
}

#[test]
fn bearer_tokens_indexes_and_corrupt_blobs() {
    let images = test_images();
    require_tool("tar");
    let layout = tempfile::tempdir().unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(images.join("busybox-oci.tar"))
        .arg("-C")
        .arg(layout.path())
        .status()
        .unwrap();
    assert!(st.success());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.path().join("index.json")).unwrap()).unwrap();
    let manifest = &index["manifests"][0];
    let multi = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{}", "e".repeat(64)), "size": 10, "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": manifest["mediaType"], "digest": manifest["digest"], "size": manifest["size"], "platform": {"os": "linux", "architecture": "amd64"}},
        ]
    });
    let reg = fake_registry(
        layout.path().to_path_buf(),
        serde_json::to_vec(&multi).unwrap(),
    );
    let addr = format!("127.0.0.1:{}", reg.port);
    let creds = PullOptions {
        username: Some("u".into()),
        password: Some("p".into()),
        ..plain_http()
    };

    let root = tempfile::tempdir().unwrap();
    let s = store(root.path());
    let before = snapshot(root.path());
    // Anonymous token requests are refused by this token server.
    let err = s
        .pull(&format!("{addr}/busybox:latest"), &plain_http())
        .unwrap_err()
        .to_string();
    assert!(err.contains("requires authentication"), "{err}");
    // A blob altered on the way (unpacked completely first): digest error, nothing stored.
    let err = s
        .pull(&format!("{addr}/corrupt:latest"), &creds)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has digest") && err.contains("layer sha256:"),
        "{err}"
    );
    let err = s
        .pull(&format!("{addr}/resized:latest"), &creds)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is 2140160 bytes but its manifest says 1087864"),
        "{err}"
    );
    assert_eq!(snapshot(root.path()), before);

    let img = s.pull(&format!("{addr}/busybox:latest"), &creds).unwrap();
    assert_eq!(img.id, podman_id());
    assert_eq!(img.digest.as_deref(), manifest["digest"].as_str());
    let via_index = s.pull(&format!("{addr}/busybox:multi"), &creds).unwrap();
    assert_eq!(via_index.id, podman_id());
    assert!(via_index.names.contains(&format!("{addr}/busybox:multi")));
    assert_eq!(layer_entries(root.path()).len(), 1);
}
