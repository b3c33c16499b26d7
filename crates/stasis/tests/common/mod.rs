//! Shared helpers of the integration tests: a throw-away store (`--root`/`--runroot` under
//! /var/tmp) driven through the real `stasis` binary with real runc and conmon, and ways to look
//! at what it leaves on disk (database rows, directories, mounts).
//!
//! Each test file includes this with `mod common;`; not every file uses every helper.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The test image's name, as `podman import` in scripts/make-test-image.sh tagged it.
pub const IMAGE: &str = "localhost/stasis-test/busybox:latest";

/// Longest any single `stasis` invocation may take before the test fails (generous: 2 shared
/// cores, many containers started at once).
pub const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Directory with the test image files, built by scripts/make-test-image.sh if missing. A
/// missing dependency fails the test: it is never skipped.
pub fn test_images() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(
            std::env::var_os("STASIS_TEST_IMAGES")
                .unwrap_or_else(|| "/var/tmp/stasis-test-images".into()),
        );
        let complete = [
            "busybox-docker.tar",
            "busybox-oci.tar",
            "rootfs.tar",
            "image-id",
        ]
        .iter()
        .all(|f| std::fs::metadata(dir.join(f)).is_ok_and(|m| m.len() > 0));
        if !complete {
            let script = repo_root().join("scripts/make-test-image.sh");
            let out = Command::new("bash")
                .arg(&script)
                .env("STASIS_TEST_IMAGES", &dir)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
            assert!(
                out.status.success(),
                "{} failed ({}): {}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        dir
    })
}

/// Podman's ID of the test image (64 hex digits).
pub fn image_id() -> String {
    let p = test_images().join("image-id");
    let id = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string();
    assert!(is_full_id(&id), "{} holds {id:?}, not an ID", p.display());
    id
}

/// Whether `s` is a full 64-hex-digit ID.
pub fn is_full_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One temporary store. Dropping it removes every container (`rm -fa`), then unmounts and
/// deletes whatever is left; it fails the test if mounts were left behind.
#[derive(Debug)]
pub struct Store {
    dir: tempfile::TempDir,
    pub root: PathBuf,
    pub runroot: PathBuf,
    io: PathBuf,
    calls: AtomicUsize,
    /// Environment variables every later `stasis` command of this store gets.
    env: std::sync::Mutex<Vec<(String, String)>>,
}

impl Store {
    /// An empty store in a fresh directory under /var/tmp.
    pub fn new() -> Store {
        let dir = tempfile::Builder::new()
            .prefix("stasis-itest.")
            .tempdir_in("/var/tmp")
            .expect("creating a temporary directory under /var/tmp");
        // Canonical, so paths compare equal to the ones in /proc/self/mountinfo.
        let base = dir.path().canonicalize().unwrap();
        let io = base.join("io");
        std::fs::create_dir(&io).unwrap();
        Store {
            root: base.join("root"),
            runroot: base.join("run"),
            io,
            dir,
            calls: AtomicUsize::new(0),
            env: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A store with the test image loaded from its docker-archive.
    pub fn with_image() -> Store {
        let s = Store::new();
        let archive = test_images().join("busybox-docker.tar");
        s.ok(&[
            OsStr::new("image"),
            "load".as_ref(),
            "-i".as_ref(),
            archive.as_os_str(),
        ]);
        s
    }

    /// The temporary directory everything of this store lives in.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Sets (or with `None` removes) an environment variable for the later `stasis`
    /// commands of this store.
    pub fn set_env(&self, key: &str, value: Option<&str>) {
        let mut env = self.env.lock().unwrap();
        env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            env.push((key.to_string(), v.to_string()));
        }
    }

    /// A `stasis` command with this store's `--root`/`--runroot`.
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_stasis"));
        for (k, v) in self.env.lock().unwrap().iter() {
            c.env(k, v);
        }
        c.arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs `stasis ARGS`, failing the test if it takes longer than [`COMMAND_LIMIT`].
    pub fn stasis<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.stasis_within(args, COMMAND_LIMIT)
    }

    /// Runs `stasis ARGS`, failing the test if it takes longer than `limit`. Output goes through
    /// files, so a process that outlives the command (conmon) can never block the test.
    pub fn stasis_within<S: AsRef<OsStr>>(&self, args: &[S], limit: Duration) -> Output {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let out_path = self.io.join(format!("{n}.out"));
        let err_path = self.io.join(format!("{n}.err"));
        let shown = show(args);
        let mut child = self
            .command(args)
            .stdout(File::create(&out_path).unwrap())
            .stderr(File::create(&err_path).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run stasis {shown}: {e}"));
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "stasis {shown} did not finish within {limit:?}; stdout: {}; stderr: {}",
                    std::fs::read_to_string(&out_path).unwrap_or_default(),
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Output {
            status,
            stdout: std::fs::read(&out_path).unwrap(),
            stderr: std::fs::read(&err_path).unwrap(),
        }
    }

    /// Runs `stasis ARGS`, asserts it succeeded and returns its stdout.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.stasis(args);
        assert!(
            out.status.success(),
            "stasis {} failed ({}); stdout: {}; stderr: {}",
            show(args),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("stdout is UTF-8")
    }

    /// Runs `stasis ARGS`, asserts it failed (non-zero exit) and returns its stderr.
    pub fn fail<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        self.fail_output(args).1
    }

    /// Runs `stasis ARGS`, asserts it failed; returns its exit code and stderr.
    pub fn fail_output<S: AsRef<OsStr>>(&self, args: &[S]) -> (i32, String) {
        let out = self.stasis(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "stasis {} succeeded but should have failed; stdout: {}; stderr: {err}",
            show(args),
            String::from_utf8_lossy(&out.stdout)
        );
        let code = out
            .status
            .code()
            .unwrap_or_else(|| panic!("stasis {} died of {}", show(args), out.status));
        (code, err)
    }

    /// Runs `stasis ARGS`, asserts it exited with `code` and printed exactly one line, an
    /// `Error: ...`, on stderr. Returns that line.
    pub fn fail_with<S: AsRef<OsStr>>(&self, code: i32, args: &[S]) -> String {
        let (got, err) = self.fail_output(args);
        assert_eq!(
            got,
            code,
            "stasis {}: exit code {got}, want {code}; stderr: {err}",
            show(args)
        );
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "stasis {}: want a one-line error, got {err:?}",
            show(args)
        );
        assert!(
            lines[0].starts_with("Error: ") && lines[0].len() > "Error: ".len() + 5,
            "stasis {}: the error line is {:?}",
            show(args),
            lines[0]
        );
        lines[0].to_string()
    }

    /// Path of the state database.
    pub fn db_path(&self) -> PathBuf {
        self.root.join("state.db")
    }

    /// Every row of `table`, each as column name → value (JSON: null, number or string).
    /// Empty if the database or the table does not exist.
    pub fn db_rows(&self, table: &str) -> Vec<BTreeMap<String, serde_json::Value>> {
        use rusqlite::types::ValueRef;
        let path = self.db_path();
        if !path.exists() {
            return Vec::new();
        }
        let conn = rusqlite::Connection::open(&path).expect("opening state.db");
        conn.busy_timeout(Duration::from_secs(30)).unwrap();
        let exists: bool = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type='table' AND name=?1",
                [table],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
            > 0;
        if !exists {
            return Vec::new();
        }
        let mut st = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let cols: Vec<String> = st.column_names().iter().map(|c| c.to_string()).collect();
        let rows = st
            .query_map([], |r| {
                let mut m = BTreeMap::new();
                for (i, c) in cols.iter().enumerate() {
                    let v = match r.get_ref(i)? {
                        ValueRef::Null => serde_json::Value::Null,
                        ValueRef::Integer(n) => n.into(),
                        ValueRef::Real(f) => f.into(),
                        ValueRef::Text(t) | ValueRef::Blob(t) => {
                            String::from_utf8_lossy(t).into_owned().into()
                        }
                    };
                    m.insert(c.clone(), v);
                }
                Ok(m)
            })
            .unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    /// The `containers` row of the container with this full ID, if any.
    pub fn container_row(&self, id: &str) -> Option<BTreeMap<String, serde_json::Value>> {
        self.db_rows("containers")
            .into_iter()
            .find(|r| r.get("id").and_then(|v| v.as_str()) == Some(id))
    }

    /// Mount points under this store's directory.
    pub fn mounts(&self) -> Vec<String> {
        mounts_under(self.path())
    }

    /// `ps -a --format json`, parsed.
    pub fn ps_json(&self) -> Vec<serde_json::Value> {
        let out = self.ok(&["ps", "-a", "--format", "json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ps json {out:?}: {e}"))
    }

    /// The `ps -a --format json` object of the container named `name`.
    pub fn ps_entry(&self, name: &str) -> serde_json::Value {
        self.ps_json()
            .into_iter()
            .find(|c| c["Names"][0] == name)
            .unwrap_or_else(|| panic!("no container {name} in ps -a"))
    }

    /// `inspect NAME` as one JSON object.
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.ok(&["inspect", name]);
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect {out:?}: {e}"));
        v[0].clone()
    }

    /// Asserts that nothing of container `id` remains: no row, no directory under root or
    /// runroot, no runc state, no exit file, no mount of its own. (Lock files are checked by
    /// [`Store::assert_lock_gone`]: a racing exit callback can recreate them, see engine.rs.)
    pub fn assert_container_gone(&self, id: &str) {
        assert!(is_full_id(id), "{id:?} is not a full ID");
        assert_eq!(
            self.container_row(id),
            None,
            "row of {id} left in containers"
        );
        for p in [
            self.root.join("containers").join(id),
            self.runroot.join("containers").join(id),
            self.runroot.join("runc").join(id),
            self.runroot.join("exits").join(id),
        ] {
            assert!(!p.exists(), "{} left behind by container {id}", p.display());
        }
        let own: Vec<String> = self
            .mounts()
            .into_iter()
            .filter(|m| m.contains(id) || m.contains(&format!("stasis-{}", &id[..12])))
            .collect();
        assert!(own.is_empty(), "mounts of {id} left: {own:?}");
        let ns = self
            .runroot
            .join("netns")
            .join(format!("stasis-{}", &id[..12]));
        assert!(!ns.exists(), "network namespace file {} left", ns.display());
    }

    /// Asserts that container `id`'s lock file is gone, once no process of this store runs.
    pub fn assert_lock_gone(&self, id: &str) {
        self.wait_idle(Duration::from_secs(20));
        let p = self.runroot.join("locks").join(id);
        assert!(!p.exists(), "lock file {} left behind", p.display());
    }

    /// Processes (other than this one) whose command line names this store: conmon, and
    /// `stasis container cleanup` run by conmon's exit command. Returns "pid: cmdline" each.
    pub fn processes(&self) -> Vec<String> {
        let me = std::process::id().to_string();
        let needle = self.path().to_string_lossy().into_owned();
        let mut found = Vec::new();
        for pid in dir_entries(Path::new("/proc")) {
            if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
                continue;
            }
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(&needle) {
                found.push(format!("{pid}: {cmd}"));
            }
        }
        found
    }

    /// Waits until no process of this store runs (the exit callbacks have finished).
    pub fn wait_idle(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            let left = self.processes();
            if left.is_empty() {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "processes of the store still running after {limit:?}: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asserts that the store holds no container at all and nothing of one.
    pub fn assert_no_containers(&self) {
        assert_eq!(
            self.db_rows("containers"),
            Vec::new(),
            "rows left in containers"
        );
        for d in [
            self.root.join("containers"),
            self.runroot.join("containers"),
            self.runroot.join("runc"),
            self.runroot.join("netns"),
            self.runroot.join("exits"),
        ] {
            let left = dir_entries(&d);
            assert!(left.is_empty(), "left in {}: {left:?}", d.display());
        }
        assert_eq!(self.mounts(), Vec::<String>::new(), "mounts left");
    }

    /// Everything a failed command must not change: rows of every table, the entries of the
    /// store's directories and the mounts.
    pub fn snapshot(&self) -> Snapshot {
        let mut rows = BTreeMap::new();
        for t in [
            "containers",
            "image_images",
            "image_names",
            "layer_layers",
            "image_layers",
        ] {
            rows.insert(t.to_string(), self.db_rows(t));
        }
        let mut dirs = BTreeMap::new();
        for d in [
            self.root.join("containers"),
            self.root.join("layers"),
            self.root.join("images"),
            self.root.join("images/blobs/sha256"),
            self.root.join("images/tmp"),
            self.root.join("tmp"),
            self.runroot.join("containers"),
            self.runroot.join("runc"),
            self.runroot.join("netns"),
            self.runroot.join("exits"),
        ] {
            dirs.insert(d.display().to_string(), dir_entries(&d));
        }
        Snapshot {
            rows,
            dirs,
            mounts: self.mounts(),
        }
    }
}

/// What [`Store::snapshot`] records.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub rows: BTreeMap<String, Vec<BTreeMap<String, serde_json::Value>>>,
    pub dirs: BTreeMap<String, Vec<String>>,
    pub mounts: Vec<String>,
}

impl Snapshot {
    /// Asserts `later` equals `self`, naming what differs.
    pub fn assert_same(&self, later: &Snapshot, after: &str) {
        for (t, rows) in &self.rows {
            assert_eq!(
                rows.len(),
                later.rows[t].len(),
                "after {after}: table {t} had {rows:?}, now {:?}",
                later.rows[t]
            );
        }
        for (d, entries) in &self.dirs {
            assert_eq!(
                entries, &later.dirs[d],
                "after {after}: entries of {d} changed"
            );
        }
        assert_eq!(self.mounts, later.mounts, "after {after}: mounts changed");
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        let mut problems = Vec::new();
        if self.root.join("state.db").exists() {
            match self
                .command(&["rm", "-f", "-a"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
            {
                Ok(o) if o.status.success() => {}
                Ok(o) => problems.push(format!(
                    "rm -fa failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => problems.push(format!("cannot run rm -fa: {e}")),
            }
        }
        // Safety net: containers runc still knows about (rm -fa failed or never ran).
        for id in dir_entries(&self.runroot.join("runc")) {
            problems.push(format!("runc container {id} left after rm -fa"));
            for args in [vec!["kill", &id, "KILL"], vec!["delete", "-f", &id]] {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(self.runroot.join("runc"))
                    .args(args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        // conmon's exit callbacks must be over before the directory goes, or a late one would
        // create the store again (Engine::open makes its directories).
        let start = Instant::now();
        while !self.processes().is_empty() && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let left = self.processes();
        if !left.is_empty() {
            problems.push(format!("processes still running: {left:?}"));
        }
        let left = self.mounts();
        if !left.is_empty() {
            problems.push(format!("mounts left after rm -fa: {left:?}"));
            // Deepest first.
            for m in left.iter().rev() {
                if let Ok(c) = std::ffi::CString::new(m.as_str()) {
                    // SAFETY: umount2 with a valid NUL-terminated path.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
            }
        }
        if !problems.is_empty() && !panicking {
            panic!(
                "store {} was not clean at the end: {}",
                self.path().display(),
                problems.join("; ")
            );
        }
    }
}

/// Mount points at or under `path`, from /proc/self/mountinfo, in mount order.
pub fn mounts_under(path: &Path) -> Vec<String> {
    let base = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let base = base.to_string_lossy().trim_end_matches('/').to_string();
    let all = stasis_engine::layout::mount_points();
    assert!(
        !all.is_empty(),
        "reading /proc/self/mountinfo gave no mount at all"
    );
    all.into_iter()
        .filter(|m| *m == base || m.starts_with(&format!("{base}/")))
        .collect()
}

/// Sorted names in `dir`; empty when it does not exist.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Polls `f` every 50 ms until it returns `Some`, failing the test after `limit`.
pub fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn show<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A tar entry for [`tar_bytes`].
#[derive(Debug)]
pub enum TarEntry<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
}

/// A ustar archive of `entries`, names taken verbatim (so `../x` can be written).
pub fn tar_bytes(entries: &[TarEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let (name, kind, data, link, mode): (&str, u8, &[u8], &str, u32) = match e {
            TarEntry::File(n, d) => (n, b'0', d, "", 0o644),
            TarEntry::Dir(n) => (n, b'5', &[], "", 0o755),
            TarEntry::Symlink(n, t) => (n, b'2', &[], t, 0o777),
        };
        assert!(
            name.len() < 100 && link.len() < 100,
            "name too long for ustar"
        );
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let mut octal = |at: usize, len: usize, v: u64| {
            let s = format!("{v:0w$o}\0", w = len - 1);
            h[at..at + len].copy_from_slice(s.as_bytes());
        };
        octal(100, 8, mode.into());
        octal(108, 8, 0);
        octal(116, 8, 0);
        octal(124, 12, data.len() as u64);
        octal(136, 12, 1_700_000_000);
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// sha256 of `data`, 64 hex digits.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---- Checkpoint/restore helpers (tests/checkpoint.rs, tests/interop.rs) ----

/// The counter of the checkpoint tests: writes 0, 1, 2, ... to /tmp/count every 100 ms.
pub const COUNTER: &str = "i=0; while true; do echo $i > /tmp/count; i=$((i+1)); sleep 0.1; done";

impl Store {
    /// Starts the [`COUNTER`] container `name` detached; returns its ID.
    pub fn run_counter(&self, name: &str) -> String {
        let out = self.ok(&["run", "-d", "--name", name, IMAGE, "sh", "-c", COUNTER]);
        let id = out.trim().to_string();
        assert!(is_full_id(&id), "run -d printed {out:?}, not an ID");
        id
    }

    /// The counter of container `name`, if it can be read now.
    pub fn try_count(&self, name: &str) -> Option<u64> {
        let out = self.stasis(&["exec", name, "cat", "/tmp/count"]);
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    /// Polls until the counter of `name` is at least `min`; returns it.
    pub fn count_at_least(&self, name: &str, min: u64) -> u64 {
        poll(
            &format!("the counter of {name} to reach {min}"),
            Duration::from_secs(30),
            || self.try_count(name).filter(|&n| n >= min),
        )
    }

    /// Asserts that the freshly restored `name` counts on from the value `before`, read just
    /// before the checkpoint (the dump happened later, so the file holds at least `before`), and
    /// that it keeps counting. Returns the first value read after the restore.
    pub fn assert_counts_on(&self, name: &str, before: u64) -> u64 {
        let first = poll(
            &format!("the counter of the restored {name}"),
            Duration::from_secs(10),
            || self.try_count(name),
        );
        assert!(
            first >= before,
            "{name} restarted: its counter is {first} right after the restore, it was {before} before the checkpoint"
        );
        self.count_at_least(name, first + 2);
        first
    }
}

/// One raw 512-byte-header record of a tar stream (header, then its data unpadded).
#[derive(Debug, Clone)]
pub struct TarRecord {
    pub header: [u8; 512],
    pub data: Vec<u8>,
}

impl TarRecord {
    /// A ustar record: `kind` is the type flag (b'0' file, b'1' hard link, b'2' symlink,
    /// b'3' character device, b'5' directory), `link` the link target.
    pub fn new(name: &str, kind: u8, link: &str, data: &[u8]) -> TarRecord {
        assert!(
            name.len() < 100 && link.len() < 100,
            "name too long for ustar"
        );
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let mode: u32 = match kind {
            b'5' => 0o755,
            b'2' => 0o777,
            _ => 0o644,
        };
        put_octal(&mut h[100..108], mode.into());
        put_octal(&mut h[108..116], 0);
        put_octal(&mut h[116..124], 0);
        put_octal(&mut h[136..148], 1_700_000_000);
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        put_octal(&mut h[329..337], if kind == b'3' { 1 } else { 0 });
        put_octal(&mut h[337..345], if kind == b'3' { 3 } else { 0 });
        let mut r = TarRecord {
            header: h,
            data: Vec::new(),
        };
        r.set_data(data);
        r
    }

    /// The entry name (ustar prefix joined when present).
    pub fn name(&self) -> String {
        let field = |r: std::ops::Range<usize>| {
            let b = &self.header[r];
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        };
        let name = field(0..100);
        let prefix = if &self.header[257..262] == b"ustar" {
            field(345..500)
        } else {
            String::new()
        };
        if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        }
    }

    /// Replaces the data, fixing the size and checksum fields.
    pub fn set_data(&mut self, data: &[u8]) {
        self.data = data.to_vec();
        put_octal(&mut self.header[124..136], data.len() as u64);
        self.header[148..156].copy_from_slice(b"        ");
        let sum: u32 = self.header.iter().map(|&b| u32::from(b)).sum();
        self.header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }
}

fn put_octal(field: &mut [u8], v: u64) {
    let s = format!("{v:0w$o}\0", w = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

/// The records of an uncompressed tar stream (up to its end marker). Only plain ustar/GNU
/// headers with octal sizes are understood, which is what `checkpoint -c none` writes.
pub fn tar_records(bytes: &[u8]) -> Vec<TarRecord> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= bytes.len() {
        let header: [u8; 512] = bytes[at..at + 512].try_into().unwrap();
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let size_field = String::from_utf8_lossy(&header[124..136]);
        let size = u64::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
            .unwrap_or_else(|e| panic!("tar size field {size_field:?}: {e}"))
            as usize;
        let data = bytes[at + 512..at + 512 + size].to_vec();
        out.push(TarRecord { header, data });
        at += 512 + size.div_ceil(512) * 512;
    }
    out
}

/// A tar stream of `records`, with the end-of-archive marker.
pub fn tar_from_records(records: &[TarRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        out.extend_from_slice(&r.header);
        out.extend_from_slice(&r.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

// ---- Podman, the reference engine ----

/// Runs `podman ARGS`.
#[allow(dead_code)]
pub fn podman(args: &[&str]) -> std::process::Output {
    std::process::Command::new("podman")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run podman {}: {e}", args.join(" ")))
}

/// Runs `podman ARGS`, asserts success, returns stdout.
#[allow(dead_code)]
pub fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {} failed ({}); stdout: {}; stderr: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
