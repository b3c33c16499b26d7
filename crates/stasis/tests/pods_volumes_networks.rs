//! Pods, volumes and networks through checkpoint/restore (issue 4): real runc, CRIU, conmon,
//! netavark and Podman 4.3. Each test has a store of its own; Podman's objects are named
//! `stasis-it4-<pid>-*` and removed by a guard even when a test fails.
//!
//! Stores side by side have their own default network and bridge names (see
//! `stasis_engine::network_options`), so the tests run in parallel; the custom subnets are fixed
//! and different per test (10.91.76-79.0/24), and every network is removed at the end.
//!
//! Pages are fetched with a plain HTTP/1.0 GET over `std::net::TcpStream` (no curl needed).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{dir_entries, image_id, is_full_id, podman, podman_ok, poll, Snapshot, Store, IMAGE};

// ---- HTTP and ports ----

/// A host port from `from` on that can be bound now (on all addresses).
fn free_port(from: u16) -> u16 {
    (from..from + 50)
        .find(|&p| TcpListener::bind((Ipv4Addr::UNSPECIFIED, p)).is_ok())
        .unwrap_or_else(|| panic!("no free port in {from}..{}", from + 50))
}

/// `GET path` on 127.0.0.1:port; the body of a 200 answer.
fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.set_write_timeout(Some(Duration::from_secs(3)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.") || !head.lines().next().unwrap_or("").contains(" 200") {
        return Err(std::io::Error::other(format!("answer {text:?}")));
    }
    Ok(body.to_string())
}

/// Polls until `GET path` on the port answers `want` (trimmed).
fn page_answers(port: u16, path: &str, want: &str) {
    let mut last = String::new();
    let got = poll(
        &format!("http://127.0.0.1:{port}{path} to answer {want:?}"),
        Duration::from_secs(20),
        || match http_get(port, path) {
            Ok(b) => Some(b),
            Err(e) => {
                last = e.to_string();
                None
            }
        },
    );
    assert_eq!(
        got.trim(),
        want,
        "http://127.0.0.1:{port}{path} (last error {last})"
    );
}

/// Asserts nothing answers on the port: the connection is refused.
fn port_refuses(port: u16) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
        Err(e) => panic!("port {port}: want connection refused, got {e}"),
        Ok(_) => panic!("port {port} still accepts connections"),
    }
}

/// A token unique to this test process and `what`.
fn token(what: &str) -> String {
    format!("{what}-{}", std::process::id())
}

// ---- Stasis helpers ----

/// `run -d OPTS --name NAME IMAGE CMD...`; returns the ID.
fn run_d(s: &Store, opts: &[&str], name: &str, cmd: &[&str]) -> String {
    let mut args = vec!["run", "-d"];
    args.extend_from_slice(opts);
    args.extend(["--name", name, IMAGE]);
    args.extend_from_slice(cmd);
    let out = s.ok(&args);
    let id = out.trim().to_string();
    assert!(is_full_id(&id), "run -d printed {out:?}, not an ID");
    id
}

const HTTPD: [&str; 6] = ["httpd", "-f", "-p", "80", "-h", "/var/www"];
const SLEEP: [&str; 2] = ["sleep", "1000"];

/// `exec NAME ip addr show eth0` → (IPv4 with prefix, MAC).
fn addr_of(out: &str) -> (String, String) {
    let mac = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("link/ether "))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no MAC in {out:?}"))
        .to_string();
    let ip = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("inet "))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no IPv4 in {out:?}"))
        .to_string();
    (ip, mac)
}

fn stasis_addr(s: &Store, name: &str) -> (String, String) {
    addr_of(&s.ok(&["exec", name, "ip", "addr", "show", "eth0"]))
}

/// `wget` of the page every pod test's server gets, over the pod's loopback.
const WGET: [&str; 5] = ["wget", "-q", "-O", "-", "http://127.0.0.1/t.txt"];

/// Polls `run` until it succeeds; returns its trimmed stdout.
fn poll_stdout(what: &str, mut run: impl FnMut() -> Output) -> String {
    poll(what, Duration::from_secs(15), || {
        let out = run();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    })
}

/// Everything a failed command must leave as it was: [`Store::snapshot`] plus the rows of
/// volumes, networks, leases, ports and pods, and the volume directories.
struct Snap {
    base: Snapshot,
    rows: BTreeMap<&'static str, Vec<BTreeMap<String, serde_json::Value>>>,
    volume_dirs: Vec<String>,
}

fn snap(s: &Store) -> Snap {
    Snap {
        base: s.snapshot(),
        rows: ["volumes", "net_networks", "net_leases", "net_ports", "pods"]
            .into_iter()
            .map(|t| (t, s.db_rows(t)))
            .collect(),
        volume_dirs: dir_entries(&s.root.join("volumes")),
    }
}

impl Snap {
    fn assert_same(&self, s: &Store, after: &str) {
        let now = snap(s);
        self.base.assert_same(&now.base, after);
        for (t, rows) in &self.rows {
            assert_eq!(rows, &now.rows[t], "after {after}: table {t} changed");
        }
        assert_eq!(
            self.volume_dirs, now.volume_dirs,
            "after {after}: volume directories changed"
        );
    }
}

/// Runs a command that must fail with exit code 125 and one `Error:` line containing each of
/// `needles`, and change nothing.
fn refused(s: &Store, before: &Snap, args: &[&str], needles: &[&str]) -> String {
    let line = s.fail_with(125, args);
    for n in needles {
        assert!(
            line.contains(n),
            "stasis {}: the error {line:?} does not mention {n:?}",
            args.join(" ")
        );
    }
    before.assert_same(s, &args.join(" "));
    line
}

/// The archive path `name` in the store's directory, as a string.
fn archive(s: &Store, name: &str) -> String {
    s.path().join(name).to_str().unwrap().to_string()
}

// ---- Podman ----

/// Podman objects of one test, removed on drop (containers, pods, volumes, networks), failure
/// or not. Declare it after the [`Store`] so it goes first.
#[derive(Default)]
struct Podman {
    containers: Vec<String>,
    pods: Vec<String>,
    volumes: Vec<String>,
    networks: Vec<String>,
}

impl Podman {
    fn new() -> Podman {
        let want = image_id();
        let got = podman_ok(&["image", "inspect", "--format", "{{.Id}}", IMAGE]);
        assert_eq!(got.trim(), want, "Podman's {IMAGE} has another ID");
        Podman::default()
    }

    fn name(what: &str) -> String {
        format!("stasis-it4-{}-{what}", std::process::id())
    }
    fn container(&mut self, what: &str) -> String {
        let n = Self::name(what);
        self.containers.push(n.clone());
        n
    }
    fn pod(&mut self, what: &str) -> String {
        let n = Self::name(what);
        self.pods.push(n.clone());
        n
    }
    fn volume(&mut self, what: &str) -> String {
        let n = Self::name(what);
        self.volumes.push(n.clone());
        n
    }
    fn network(&mut self, what: &str) -> String {
        let n = Self::name(what);
        self.networks.push(n.clone());
        n
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let mut problems = Vec::new();
        let mut run = |args: Vec<&str>| {
            let out = podman(&args);
            if !out.status.success() {
                problems.push(format!(
                    "podman {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        };
        if !self.containers.is_empty() {
            let mut a = vec!["rm", "-f", "-t", "0", "--ignore"];
            a.extend(self.containers.iter().map(String::as_str));
            run(a);
        }
        if !self.pods.is_empty() {
            let mut a = vec!["pod", "rm", "-f", "-t", "0", "--ignore"];
            a.extend(self.pods.iter().map(String::as_str));
            run(a);
        }
        for (kind, names) in [("volume", &self.volumes), ("network", &self.networks)] {
            for n in names {
                if podman(&[kind, "exists", n]).status.success() {
                    run(vec![kind, "rm", "-f", n]);
                }
            }
        }
        if !problems.is_empty() && !std::thread::panicking() {
            panic!("removing Podman's objects: {}", problems.join("; "));
        }
    }
}

fn podman_addr(name: &str) -> (String, String) {
    addr_of(&podman_ok(&["exec", name, "ip", "addr", "show", "eth0"]))
}

// ---- 1. Published ports ----

#[test]
fn published_port_moves_to_the_restored_copy() {
    let s = Store::with_image();
    let hp = free_port(18410);
    let hp2 = free_port(hp + 1);
    run_d(&s, &["-p", &format!("{hp}:80")], "w1", &HTTPD);
    // A page of this test's own, so an answer from another container cannot pass.
    let tok = token("w1");
    s.ok(&[
        "exec",
        "w1",
        "sh",
        "-c",
        &format!("echo {tok} > /var/www/token.txt"),
    ]);
    page_answers(hp, "/token.txt", &tok);

    let a = archive(&s, "w1.tar.zst");
    s.ok(&["container", "checkpoint", "--export", &a, "w1"]);
    port_refuses(hp);
    s.ok(&[
        "container",
        "restore",
        "--import",
        &a,
        "--name",
        "w2",
        "-p",
        &format!("{hp2}:80"),
    ]);
    page_answers(hp2, "/token.txt", &tok);
    page_answers(hp2, "/", "<h1>stasis</h1>");
    port_refuses(hp);
    let ports = s.ps_entry("w2")["Ports"].to_string();
    assert!(ports.contains(&hp2.to_string()), "ps of w2: Ports {ports}");

    s.ok(&["rm", "-f", "w1", "w2"]);
    port_refuses(hp2);
    assert_eq!(s.db_rows("net_ports"), Vec::new(), "ports left");
    assert_eq!(s.db_rows("net_leases"), Vec::new(), "leases left");
}

// ---- 2. Static IP and MAC ----

#[test]
fn static_ip_and_mac_survive_restore_and_can_be_ignored() {
    let s = Store::with_image();
    const IP: &str = "10.91.77.5/24";
    const MAC: &str = "92:d0:c6:0a:29:33";
    s.ok(&["network", "create", "--subnet", "10.91.77.0/24", "it4net77"]);
    let id = run_d(
        &s,
        &[
            "--network",
            "it4net77",
            "--ip",
            "10.91.77.5",
            "--mac-address",
            MAC,
        ],
        "n1",
        &SLEEP,
    );
    assert_eq!(stasis_addr(&s, "n1"), (IP.into(), MAC.into()));

    let a = archive(&s, "n1.tar.zst");
    s.ok(&["container", "checkpoint", "--export", &a, "n1"]);
    s.ok(&["rm", "n1"]);
    s.assert_container_gone(&id);
    s.ok(&["container", "restore", "--import", &a]);
    assert_eq!(s.inspect("n1")["Id"], id.as_str(), "restored under its ID");
    assert_eq!(
        stasis_addr(&s, "n1"),
        (IP.into(), MAC.into()),
        "restored n1"
    );

    // While n1 holds them, a copy asking for the same address fails and leaves nothing.
    let before = snap(&s);
    let err = refused(
        &s,
        &before,
        &["container", "restore", "--import", &a, "--name", "n2"],
        &["already in use"],
    );
    assert!(
        err.contains(MAC) || err.contains("10.91.77.5"),
        "the error names neither the IP nor the MAC: {err}"
    );

    s.ok(&[
        "container",
        "restore",
        "--import",
        &a,
        "--name",
        "n3",
        "--ignore-static-ip",
        "--ignore-static-mac",
    ]);
    let (ip3, mac3) = stasis_addr(&s, "n3");
    assert!(
        ip3.starts_with("10.91.77.") && ip3 != IP,
        "n3 has {ip3}, want another address of 10.91.77.0/24"
    );
    assert_ne!(mac3, MAC, "n3 kept the static MAC");
    assert_eq!(
        stasis_addr(&s, "n1"),
        (IP.into(), MAC.into()),
        "n1 after n3"
    );
    assert_eq!(s.db_rows("net_leases").len(), 2, "one lease each");

    s.ok(&["rm", "-f", "n1", "n3"]);
    s.ok(&["network", "rm", "it4net77"]);
    assert_eq!(s.db_rows("net_leases"), Vec::new());
    assert!(
        !s.db_rows("net_networks")
            .iter()
            .any(|r| r["name"] == "it4net77"),
        "network it4net77 left"
    );
}

/// A restore sets its network up while runc and CRIU restore; CRIU waits for it at
/// `setup-namespaces` (a runc prestart hook). When netavark fails there, even late, the
/// restore fails with netavark's error, the copy never ran, and nothing is left behind.
#[test]
fn a_network_setup_failing_beside_the_restore_fails_it_and_leaves_nothing() {
    let s = Store::with_image();
    // The workload appends a line to a host file every 10 ms: whether it ran shows there.
    let data = s.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let vol = format!("{}:/data", data.display());
    let lines = || {
        std::fs::read_to_string(data.join("f"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let cmd = [
        "sh",
        "-c",
        "while :; do echo x >> /data/f; sleep 0.01; done",
    ];
    run_d(&s, &["-v", &vol], "g1", &cmd);
    poll("g1 writes", Duration::from_secs(10), || {
        (lines() > 0).then_some(())
    });
    let a = archive(&s, "g1.tar.zst");
    s.ok(&["container", "checkpoint", "--export", &a, "g1"]);
    // (its namespace is released by conmon's exit command: wait no further than `rm`)
    s.ok(&["rm", "g1"]);
    let written = lines();
    let netavark = ["/usr/libexec/podman/netavark", "/usr/lib/podman/netavark"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("netavark is installed");
    // netavark as before, but `setup` fails (late: the restore has long reached its gate)
    // the way netavark reports errors.
    let fake = s.path().join("netavark-failing-setup");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do\n  [ \"$a\" = setup ] && {{ sleep 0.4; echo '{{\"error\": \"injected setup failure\"}}'; exit 1; }}\ndone\nexec {netavark} \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let before = snap(&s);
    s.set_env("STASIS_NETAVARK", fake.to_str());
    refused(
        &s,
        &before,
        &["container", "restore", "--import", &a, "--name", "g2"],
        &["injected setup failure"],
    );
    s.set_env("STASIS_NETAVARK", None);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(lines(), written, "the copy ran before its network existed");
    // The same archive restores once netavark works again, and runs.
    s.ok(&["container", "restore", "--import", &a, "--name", "g2"]);
    poll("g2 writes", Duration::from_secs(10), || {
        (lines() > written).then_some(())
    });
    s.ok(&["rm", "-f", "g2"]);
    assert_eq!(s.db_rows("net_leases"), Vec::new(), "leases left");
}

// ---- 3. Volumes and bind mounts ----

#[test]
fn volume_content_is_carried_and_an_existing_volume_is_refused() {
    let s = Store::with_image();
    let id = run_d(
        &s,
        &["--network", "none", "-v", "it4data:/data"],
        "v1",
        &SLEEP,
    );
    s.ok(&["exec", "v1", "sh", "-c", "echo before-checkpoint > /data/f"]);
    let a = archive(&s, "v1.tar.zst");
    s.ok(&["container", "checkpoint", "--export", &a, "v1"]);
    s.ok(&["rm", "v1"]);
    s.ok(&["volume", "rm", "it4data"]);
    assert_eq!(s.db_rows("volumes"), Vec::new());

    s.ok(&["container", "restore", "--import", &a]);
    assert_eq!(s.inspect("v1")["Id"], id.as_str());
    assert_eq!(
        s.ok(&["exec", "v1", "cat", "/data/f"]),
        "before-checkpoint\n"
    );
    assert_eq!(s.ok(&["volume", "ls", "-q"]).trim(), "it4data");

    // The volume exists now: Podman's refusal, word for word, and nothing changes.
    let before = snap(&s);
    let line = s.fail_with(
        125,
        &["container", "restore", "--import", &a, "--name", "v2"],
    );
    assert_eq!(
        line,
        "Error: volume with name it4data already exists. Use --ignore-volumes to not restore content of volumes"
    );
    before.assert_same(&s, "the second import");

    // --ignore-volumes: the copy uses the existing volume as it is.
    s.ok(&["exec", "v1", "sh", "-c", "echo after-restore > /data/g"]);
    s.ok(&[
        "container",
        "restore",
        "--import",
        &a,
        "--name",
        "v2",
        "--ignore-volumes",
    ]);
    assert_eq!(
        s.ok(&["exec", "v2", "cat", "/data/f", "/data/g"]),
        "before-checkpoint\nafter-restore\n"
    );
    s.ok(&["rm", "-f", "v1", "v2"]);
    s.ok(&["volume", "rm", "it4data"]);
}

#[test]
fn restore_whose_bind_source_is_gone_fails_and_leaves_nothing() {
    let s = Store::with_image();
    let dir = tempfile::Builder::new()
        .prefix("stasis-it4-bind.")
        .tempdir_in("/var/tmp")
        .unwrap();
    let src = dir.path().canonicalize().unwrap();
    let src_s = src.to_str().unwrap().to_string();
    std::fs::write(src.join("x"), "bound\n").unwrap();
    let id = run_d(
        &s,
        &["--network", "none", "-v", &format!("{src_s}:/mnt")],
        "b1",
        &SLEEP,
    );
    assert_eq!(s.ok(&["exec", "b1", "cat", "/mnt/x"]), "bound\n");
    let a = archive(&s, "b1.tar.zst");
    s.ok(&["container", "checkpoint", "--export", &a, "b1"]);
    s.ok(&["rm", "b1"]);
    s.assert_container_gone(&id);
    std::fs::remove_dir_all(&src).unwrap();

    let before = snap(&s);
    for args in [
        vec!["container", "restore", "--import", &a],
        vec!["container", "restore", "--import", &a, "--name", "b2"],
    ] {
        let (_, err) = s.fail_output(&args);
        assert!(
            err.contains(&src_s),
            "restore {args:?}: the error does not name {src_s}: {err}"
        );
        before.assert_same(&s, &args.join(" "));
    }
    s.assert_no_containers();

    // With the source back, the same archive restores.
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("x"), "again\n").unwrap();
    s.ok(&["container", "restore", "--import", &a]);
    assert_eq!(s.ok(&["exec", "b1", "cat", "/mnt/x"]), "again\n");
    s.ok(&["rm", "-f", "b1"]);
}

// ---- 4. Pods ----

/// The `ps -a` states of the containers named, in that order.
fn states(s: &Store, names: &[&str]) -> Vec<String> {
    let all = s.ps_json();
    names
        .iter()
        .map(|n| {
            all.iter()
                .find(|c| c["Names"][0] == *n)
                .map(|c| c["State"].as_str().unwrap_or("?").to_string())
                .unwrap_or_else(|| "gone".into())
        })
        .collect()
}

#[test]
fn pod_restores_refusals_member_by_name_stop_and_rm() {
    let s = Store::with_image();
    let pod_id = s.ok(&["pod", "create", "--name", "pa"]).trim().to_string();
    assert!(is_full_id(&pod_id), "pod create printed {pod_id:?}");
    let srv = run_d(&s, &["--pod", "pa"], "srv", &HTTPD);
    run_d(&s, &["--pod", "pa"], "cli", &SLEEP);
    let tok = token("pod-page");
    s.ok(&[
        "exec",
        "srv",
        "sh",
        "-c",
        &format!("echo {tok} > /var/www/t.txt"),
    ]);
    let wget = |name: &str| {
        poll_stdout(
            &format!("{name} to reach the pod's server on 127.0.0.1"),
            || s.stasis(&[&["exec", name][..], &WGET].concat()),
        )
    };
    assert_eq!(wget("cli"), tok);

    let member = archive(&s, "member.tar.zst");
    s.ok(&["container", "checkpoint", "--export", &member, "cli"]);
    s.ok(&["rm", "cli"]);
    let plain = archive(&s, "plain.tar.zst");
    run_d(&s, &["--network", "none"], "plain", &SLEEP);
    s.ok(&["container", "checkpoint", "--export", &plain, "plain"]);
    s.ok(&["pod", "create", "--name", "nonet", "--share", "ipc,uts"]);

    // Each refusal, and nothing changes.
    let before = snap(&s);
    let line = s.fail_with(
        125,
        &["container", "restore", "--import", &member, "--name", "x"],
    );
    assert_eq!(line, "Error: cannot restore pod container without --pod");
    before.assert_same(&s, "pod archive without --pod");
    let line = s.fail_with(
        125,
        &[
            "container",
            "restore",
            "--import",
            &plain,
            "--name",
            "x",
            "--pod",
            "pa",
        ],
    );
    assert_eq!(line, "Error: cannot restore non pod container into pod");
    before.assert_same(&s, "non-pod archive with --pod");
    refused(
        &s,
        &before,
        &[
            "container",
            "restore",
            "--import",
            &member,
            "--name",
            "x",
            "--pod",
            "nosuch",
        ],
        &["nosuch"],
    );
    let line = s.fail_with(
        125,
        &[
            "container",
            "restore",
            "--import",
            &member,
            "--name",
            "x",
            "--pod",
            "nonet",
        ],
    );
    assert_eq!(
        line,
        "Error: pod nonet does not share the network namespace"
    );
    before.assert_same(&s, "a pod not sharing the network namespace");

    // Into the pod by name: the server of the pod is on its 127.0.0.1.
    let cli2 = s
        .ok(&[
            "container",
            "restore",
            "--import",
            &member,
            "--name",
            "cli2",
            "--pod",
            "pa",
        ])
        .trim()
        .to_string();
    assert_eq!(wget("cli2"), tok);
    assert_eq!(s.ps_entry("cli2")["Pod"], pod_id.as_str(), "ps of cli2");
    let inspect: serde_json::Value =
        serde_json::from_str(&s.ok(&["pod", "inspect", "pa"])).unwrap();
    let infra_id = inspect[0]["InfraContainerID"]
        .as_str()
        .unwrap_or_else(|| panic!("pod inspect pa: {inspect}"))
        .to_string();
    let infra_name = s.inspect(&infra_id)["Name"]
        .as_str()
        .unwrap_or_else(|| panic!("no name in inspect of {infra_id}"))
        .to_string();

    // pod stop takes its containers along; pod rm leaves nothing of them.
    s.ok(&["pod", "stop", "-t", "1", "pa"]);
    assert_eq!(
        states(&s, &["srv", "cli2", &infra_name]),
        ["exited", "exited", "exited"]
    );
    s.ok(&["pod", "rm", "pa"]);
    for id in [&srv, &cli2, &infra_id] {
        s.assert_container_gone(id);
    }
    assert_eq!(
        states(&s, &["srv", "cli2", &infra_name]),
        ["gone", "gone", "gone"]
    );
    s.ok(&["pod", "rm", "nonet"]);
    s.ok(&["rm", "plain"]);
    s.assert_no_containers();
    assert_eq!(s.db_rows("pods"), Vec::new(), "pods left");
    assert_eq!(s.db_rows("net_leases"), Vec::new(), "leases left");
}

// ---- 5. Bad input ----

#[test]
fn bad_network_volume_and_pod_input_leaves_nothing() {
    let s = Store::with_image();
    s.ok(&["network", "create", "--subnet", "10.91.79.0/24", "it4bad"]);
    run_d(
        &s,
        &["--network", "it4bad", "--ip", "10.91.79.5"],
        "holder",
        &SLEEP,
    );
    // On the default network, which is thus made (on first use) before the snapshot.
    run_d(&s, &["-v", "it4vol:/data"], "vh", &SLEEP);
    let busy = TcpListener::bind((Ipv4Addr::UNSPECIFIED, free_port(18430))).unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();

    let before = snap(&s);
    fn run<'a>(opts: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["run", "-d", "--name", "bad"];
        v.extend_from_slice(opts);
        v.extend([IMAGE, "sleep", "1000"]);
        v
    }
    refused(
        &s,
        &before,
        &["network", "create", "--subnet", "10.91.79.128/25", "it4ov"],
        &["10.91.79.128/25", "overlaps", "it4bad"],
    );
    refused(
        &s,
        &before,
        &run(&["--network", "it4bad", "--ip", "10.91.79.5"]),
        &["10.91.79.5", "already in use"],
    );
    refused(
        &s,
        &before,
        &run(&["--network", "it4bad", "--ip", "10.91.99.5"]),
        &["10.91.99.5", "not in the subnet"],
    );
    refused(
        &s,
        &before,
        &run(&["--network", "it4bad", "--mac-address", "92:d0:zz:0a:29:33"]),
        &["92:d0:zz:0a:29:33"],
    );
    refused(&s, &before, &run(&["-p", "80:abc"]), &["80:abc"]);
    refused(
        &s,
        &before,
        &run(&["-p", &format!("{busy_port}:80")]),
        &[&busy_port, "in use"],
    );
    refused(&s, &before, &run(&["--network", "nosuch"]), &["nosuch"]);
    refused(&s, &before, &run(&["--pod", "nosuch"]), &["nosuch"]);
    refused(
        &s,
        &before,
        &["network", "rm", "it4bad"],
        &["it4bad", "holder"],
    );
    refused(&s, &before, &["volume", "rm", "it4vol"], &["it4vol", "vh"]);
    drop(busy);

    s.ok(&["rm", "-f", "holder", "vh"]);
    s.ok(&["network", "rm", "it4bad"]);
    s.ok(&["volume", "rm", "it4vol"]);
    s.assert_no_containers();
    assert_eq!(s.db_rows("net_leases"), Vec::new());
}

// ---- 6. Podman interchange ----

#[test]
fn podman_and_stasis_exchange_named_volumes() {
    let s = Store::with_image();
    let mut p = Podman::new();

    // Podman → stasis.
    let pc = p.container("volsrc");
    let pv = p.volume("pvol");
    podman_ok(&[
        "run",
        "-d",
        "--name",
        &pc,
        "-v",
        &format!("{pv}:/data"),
        IMAGE,
        "sleep",
        "1000",
    ]);
    podman_ok(&["exec", &pc, "sh", "-c", "echo from-podman > /data/f"]);
    let a = archive(&s, "podman-vol.tar.zst");
    podman_ok(&["container", "checkpoint", "-e", &a, &pc]);
    s.ok(&["container", "restore", "--import", &a]);
    assert_eq!(s.ok(&["exec", &pc, "cat", "/data/f"]), "from-podman\n");
    assert_eq!(s.ok(&["volume", "ls", "-q"]).trim(), pv);

    // stasis → Podman.
    let sc = p.container("volfromstasis");
    let sv = p.volume("svol");
    run_d(&s, &["-v", &format!("{sv}:/data")], &sc, &SLEEP);
    s.ok(&["exec", &sc, "sh", "-c", "echo from-stasis > /data/f"]);
    let b = archive(&s, "stasis-vol.tar.zst");
    s.ok(&["container", "checkpoint", "--export", &b, &sc]);
    podman_ok(&["container", "restore", "--import", &b]);
    assert_eq!(podman_ok(&["exec", &sc, "cat", "/data/f"]), "from-stasis\n");
    let mp = podman_ok(&["volume", "inspect", "--format", "{{.Mountpoint}}", &sv]);
    assert_eq!(
        std::fs::read_to_string(Path::new(mp.trim()).join("f")).unwrap(),
        "from-stasis\n",
        "Podman's volume {sv}"
    );
    s.ok(&["rm", "-f", &pc, &sc]);
}

/// Podman container on a custom network with a static IP/MAC and a published port → stasis;
/// then a stasis one the same way → Podman.
#[test]
fn podman_and_stasis_exchange_static_addresses_on_a_custom_network() {
    let s = Store::with_image();
    let mut p = Podman::new();
    let net = p.network("net");
    const SUBNET: &str = "10.91.78.0/24";
    let hp = free_port(18450);
    let hp2 = free_port(hp + 1);

    // Podman → stasis.
    let pc = p.container("web");
    let (pip, pmac) = ("10.91.78.5", "92:d0:c6:0a:29:44");
    podman_ok(&["network", "create", "--subnet", SUBNET, &net]);
    podman_ok(&[
        "run",
        "-d",
        "--name",
        &pc,
        "--network",
        &net,
        "--ip",
        pip,
        "--mac-address",
        pmac,
        "-p",
        &format!("{hp}:80"),
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/var/www",
    ]);
    let tok = token("podman-web");
    podman_ok(&[
        "exec",
        &pc,
        "sh",
        "-c",
        &format!("echo {tok} > /var/www/t.txt"),
    ]);
    page_answers(hp, "/t.txt", &tok);
    let a = archive(&s, "podman-web.tar.zst");
    podman_ok(&["container", "checkpoint", "-e", &a, &pc]);
    // Two bridges with one subnet on one host conflict: Podman's network goes first.
    podman_ok(&["rm", "-f", "-t", "0", &pc]);
    podman_ok(&["network", "rm", &net]);
    s.ok(&["network", "create", "--subnet", SUBNET, &net]);
    s.ok(&["container", "restore", "--import", &a]);
    assert_eq!(
        stasis_addr(&s, &pc),
        (format!("{pip}/24"), pmac.to_string()),
        "Podman's container restored in stasis"
    );
    page_answers(hp, "/t.txt", &tok);
    s.ok(&["rm", "-f", &pc]);
    port_refuses(hp);

    // stasis → Podman.
    let sc = p.container("sweb");
    let (sip, smac) = ("10.91.78.6", "92:d0:c6:0a:29:66");
    run_d(
        &s,
        &[
            "--network",
            &net,
            "--ip",
            sip,
            "--mac-address",
            smac,
            "-p",
            &format!("{hp2}:80"),
        ],
        &sc,
        &HTTPD,
    );
    let tok2 = token("stasis-web");
    s.ok(&[
        "exec",
        &sc,
        "sh",
        "-c",
        &format!("echo {tok2} > /var/www/t.txt"),
    ]);
    page_answers(hp2, "/t.txt", &tok2);
    let b = archive(&s, "stasis-web.tar.zst");
    s.ok(&["container", "checkpoint", "--export", &b, &sc]);
    s.ok(&["rm", &sc]);
    s.ok(&["network", "rm", &net]);
    podman_ok(&["network", "create", "--subnet", SUBNET, &net]);
    podman_ok(&["container", "restore", "--import", &b]);
    assert_eq!(
        podman_addr(&sc),
        (format!("{sip}/24"), smac.to_string()),
        "stasis's container restored in Podman"
    );
    page_answers(hp2, "/t.txt", &tok2);
}

/// A container that came from Podman and was restored in stasis, exported again by stasis,
/// must come back in Podman with its IP and MAC.
#[test]
fn podman_container_restored_in_stasis_goes_back_with_its_addresses() {
    let s = Store::with_image();
    let mut p = Podman::new();
    let net = p.network("rtnet");
    const SUBNET: &str = "10.91.76.0/24";
    let pc = p.container("rt");
    let (ip, mac) = ("10.91.76.5", "92:d0:c6:0a:29:77");
    podman_ok(&["network", "create", "--subnet", SUBNET, &net]);
    podman_ok(&[
        "run",
        "-d",
        "--name",
        &pc,
        "--network",
        &net,
        "--ip",
        ip,
        "--mac-address",
        mac,
        IMAGE,
        "sleep",
        "1000",
    ]);
    let a = archive(&s, "rt1.tar.zst");
    podman_ok(&["container", "checkpoint", "-e", &a, &pc]);
    podman_ok(&["rm", "-f", "-t", "0", &pc]);
    podman_ok(&["network", "rm", &net]);
    s.ok(&["network", "create", "--subnet", SUBNET, &net]);
    s.ok(&["container", "restore", "--import", &a]);
    assert_eq!(stasis_addr(&s, &pc), (format!("{ip}/24"), mac.to_string()));

    let b = archive(&s, "rt2.tar");
    s.ok(&["container", "checkpoint", "-c", "none", "--export", &b, &pc]);
    let status = common::tar_records(&std::fs::read(&b).unwrap())
        .into_iter()
        .find(|r| r.name() == "network.status")
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .unwrap_or_default();
    s.ok(&["rm", &pc]);
    s.ok(&["network", "rm", &net]);
    podman_ok(&["network", "create", "--subnet", SUBNET, &net]);
    podman_ok(&["container", "restore", "--import", &b]);
    assert_eq!(
        podman_addr(&pc),
        (format!("{ip}/24"), mac.to_string()),
        "back in Podman; the archive's network.status was {status:?}"
    );
}

#[test]
fn podman_and_stasis_exchange_pod_members() {
    let s = Store::with_image();
    let mut p = Podman::new();
    // A Podman pod member → a stasis pod given by name.
    let ppod = p.pod("pod");
    podman_ok(&["pod", "create", "--name", &ppod]);
    let pm = p.container("member");
    podman_ok(&[
        "run", "-d", "--pod", &ppod, "--name", &pm, IMAGE, "sleep", "1000",
    ]);
    let a = archive(&s, "podman-member.tar.zst");
    podman_ok(&["container", "checkpoint", "-e", &a, &pm]);
    s.ok(&["pod", "create", "--name", "sp"]);
    run_d(&s, &["--pod", "sp"], "ssrv", &HTTPD);
    let stok = token("stasis-pod");
    s.ok(&[
        "exec",
        "ssrv",
        "sh",
        "-c",
        &format!("echo {stok} > /var/www/t.txt"),
    ]);
    s.ok(&["container", "restore", "--import", &a, "--pod", "sp"]);
    let got = poll_stdout("Podman's member to reach the stasis pod's server", || {
        s.stasis(&[&["exec", pm.as_str()][..], &WGET].concat())
    });
    assert_eq!(got, stok, "Podman's member in the stasis pod");

    // A stasis pod member → a Podman pod given by ID (Podman 4.3 cannot find it by name).
    let sm = p.container("smember");
    run_d(&s, &["--pod", "sp"], &sm, &SLEEP);
    let b = archive(&s, "stasis-member.tar.zst");
    s.ok(&["container", "checkpoint", "--export", &b, &sm]);
    let psrv = p.container("psrv");
    podman_ok(&[
        "run", "-d", "--pod", &ppod, "--name", &psrv, IMAGE, "httpd", "-f", "-p", "80", "-h",
        "/var/www",
    ]);
    let ptok = token("podman-pod");
    podman_ok(&[
        "exec",
        &psrv,
        "sh",
        "-c",
        &format!("echo {ptok} > /var/www/t.txt"),
    ]);
    let ppod_id = podman_ok(&["pod", "inspect", "--format", "{{.ID}}", &ppod]);
    podman_ok(&[
        "container",
        "restore",
        "--import",
        &b,
        "--pod",
        ppod_id.trim(),
    ]);
    let got = poll_stdout("stasis's member to reach the Podman pod's server", || {
        podman(&[&["exec", sm.as_str()][..], &WGET].concat())
    });
    assert_eq!(got, ptok, "stasis's member in the Podman pod");

    s.ok(&["pod", "rm", "-f", "sp"]);
    s.assert_no_containers();
}

/// A new volume mounted over a directory of the image starts with the image's content there
/// (Podman's copy-up), once: later runs see what the volume holds, not the image again.
#[test]
fn new_volume_gets_the_image_content_once() {
    let s = Store::with_image();
    let vol = format!("copyup-{}", std::process::id());
    let spec = format!("{vol}:/var/www");
    let first = s.ok(&[
        "run",
        "--rm",
        "-v",
        &spec,
        IMAGE,
        "cat",
        "/var/www/index.html",
    ]);
    assert!(
        first.contains("stasis"),
        "image content copied up: {first:?}"
    );
    s.ok(&[
        "run",
        "--rm",
        "-v",
        &spec,
        IMAGE,
        "sh",
        "-c",
        "echo changed > /var/www/index.html; rm -f /var/www/other",
    ]);
    let again = s.ok(&[
        "run",
        "--rm",
        "-v",
        &spec,
        IMAGE,
        "cat",
        "/var/www/index.html",
    ]);
    assert_eq!(
        again.trim(),
        "changed",
        "no second copy-up over the volume's own content"
    );
    s.ok(&["volume", "rm", &vol]);
}
