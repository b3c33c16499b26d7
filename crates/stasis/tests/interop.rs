//! Checkpoint archives interchangeable with Podman 4.3 in both directions (issue 3): real
//! Podman, runc, conmon and CRIU. Podman's containers are named `stasis-it-<pid>-*` and are
//! removed by a guard even when a test fails. Both engines hold the test image under the same
//! ID (Podman from scripts/make-test-image.sh, stasis from its docker-archive).
//!
//! Each test takes a few seconds (three exports and three restores).

mod common;

use std::cell::RefCell;
use std::time::Duration;

use common::{image_id, podman, podman_ok, poll, Store, COUNTER, IMAGE};

/// Podman containers of one test; all removed on drop, failure or not.
struct Podman {
    names: RefCell<Vec<String>>,
}

impl Podman {
    fn new() -> Podman {
        // The image must be Podman's, with the ID stasis gets from the docker-archive.
        let want = image_id();
        let got = podman_ok(&["image", "inspect", "--format", "{{.Id}}", IMAGE]);
        assert_eq!(got.trim(), want, "Podman's {IMAGE} has another ID");
        Podman {
            names: RefCell::new(Vec::new()),
        }
    }

    /// A container name of this test process, registered for removal.
    fn name(&self, what: &str) -> String {
        let n = format!("stasis-it-{}-{what}", std::process::id());
        self.names.borrow_mut().push(n.clone());
        n
    }

    fn try_count(&self, name: &str) -> Option<u64> {
        let out = podman(&["exec", name, "cat", "/tmp/count"]);
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    fn count_at_least(&self, name: &str, min: u64) -> u64 {
        poll(
            &format!("the counter of Podman's {name} to reach {min}"),
            Duration::from_secs(30),
            || self.try_count(name).filter(|&n| n >= min),
        )
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let names = self.names.borrow();
        if names.is_empty() {
            return;
        }
        let mut args = vec!["rm", "-f", "-t", "0", "--ignore"];
        args.extend(names.iter().map(String::as_str));
        let out = podman(&args);
        if !out.status.success() && !std::thread::panicking() {
            panic!(
                "podman rm -f failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

const COMPRESSIONS: [&str; 3] = ["zstd", "gzip", "none"];

/// Adds /added and /newdir/sub/inner, appends to /var/www/index.html, deletes /etc/motd.
const CHANGE: &str = "echo added > /added; mkdir -p /newdir/sub; echo inner > /newdir/sub/inner; \
     { cat /var/www/index.html; echo appended; } > /var/www/new && mv /var/www/new /var/www/index.html; rm /etc/motd";
/// Shows what [`CHANGE`] changed.
const VIEW: &str = "cat /added /newdir/sub/inner /var/www/index.html 2>&1; ls /etc/motd 2>&1; true";
const CHANGED: &str =
    "added\ninner\n<h1>stasis</h1>\nappended\nls: /etc/motd: No such file or directory\n";

/// [`CHANGE`] for Podman 4.3 as the exporter: it puts a modified file in rootfs-diff.tar only
/// when the same path exists on the *host* (`CRCreateRootFsDiffTar` stats the in-container
/// path on the host, see the notes §1.6), so the modified file is /etc/motd here (Debian has
/// one) and the deleted one /var/www/index.html.
const PODMAN_CHANGE: &str = "echo added > /added; mkdir -p /newdir/sub; \
     echo inner > /newdir/sub/inner; echo appended >> /etc/motd; rm /var/www/index.html";
const PODMAN_VIEW: &str =
    "cat /added /newdir/sub/inner /etc/motd 2>&1; ls /var/www/index.html 2>&1; true";
const PODMAN_CHANGED: &str = "added\ninner\nhello from the image\nappended\n\
     ls: /var/www/index.html: No such file or directory\n";

#[test]
fn podman_exports_restore_in_stasis_and_count_on() {
    // The store is declared first so that Podman's containers go first (drop order).
    let s = Store::with_image();
    let p = Podman::new();
    let src = p.name("src");
    podman_ok(&["run", "-d", "--name", &src, IMAGE, "sh", "-c", COUNTER]);
    p.count_at_least(&src, 10);
    for c in COMPRESSIONS {
        // (polled: a read can fall between the shell truncating and writing the file)
        let before = p.count_at_least(&src, 0);
        let archive = s.path().join(format!("podman-{c}.tar"));
        let archive = archive.to_str().unwrap();
        podman_ok(&[
            "container",
            "checkpoint",
            "-R",
            "-c",
            c,
            "-e",
            archive,
            &src,
        ]);
        let name = format!("from-podman-{c}");
        s.ok(&["container", "restore", "-i", archive, "--name", &name]);
        assert_eq!(s.ps_entry(&name)["State"], "running");
        s.assert_counts_on(&name, before);
    }
}

#[test]
fn stasis_exports_restore_in_podman_and_count_on() {
    // The store is declared first so that Podman's containers go first (drop order).
    let s = Store::with_image();
    let p = Podman::new();
    s.run_counter("c1");
    s.count_at_least("c1", 10);
    for c in COMPRESSIONS {
        // (polled: a read can fall between the shell truncating and writing the file)
        let before = s.count_at_least("c1", 0);
        let archive = s.path().join(format!("stasis-{c}.tar"));
        let archive = archive.to_str().unwrap();
        s.ok(&["checkpoint", "-R", "-c", c, "-e", archive, "c1"]);
        let name = p.name(&format!("from-stasis-{c}"));
        podman_ok(&["container", "restore", "--import", archive, "--name", &name]);
        let first = poll(
            &format!("the counter of Podman's {name}"),
            Duration::from_secs(10),
            || p.try_count(&name),
        );
        assert!(
            first >= before,
            "{name} restarted in Podman: {first}, was {before} before the checkpoint"
        );
        p.count_at_least(&name, first + 2);
        podman_ok(&["rm", "-f", "-t", "0", &name]);
    }
}

#[test]
fn rootfs_changes_survive_both_ways() {
    // The store is declared first so that Podman's containers go first (drop order).
    let s = Store::with_image();
    let p = Podman::new();

    // Podman → stasis.
    let src = p.name("rootfs-src");
    podman_ok(&["run", "-d", "--name", &src, IMAGE, "sh", "-c", COUNTER]);
    assert!(
        std::path::Path::new("/etc/motd").is_file(),
        "Podman 4.3 exports a modified /etc/motd only if the host has one"
    );
    podman_ok(&["exec", &src, "sh", "-c", PODMAN_CHANGE]);
    assert_eq!(
        podman_ok(&["exec", &src, "sh", "-c", PODMAN_VIEW]),
        PODMAN_CHANGED
    );
    let archive = s.path().join("podman.tar.zst");
    let archive = archive.to_str().unwrap();
    podman_ok(&["container", "checkpoint", "-e", archive, &src]);
    s.ok(&["restore", "-i", archive, "--name", "from-podman"]);
    assert_eq!(
        s.ok(&["exec", "from-podman", "sh", "-c", PODMAN_VIEW]),
        PODMAN_CHANGED,
        "Podman's rootfs changes, restored by stasis"
    );

    // stasis → Podman.
    s.run_counter("c1");
    s.ok(&["exec", "c1", "sh", "-c", CHANGE]);
    let archive = s.path().join("stasis.tar.zst");
    let archive = archive.to_str().unwrap();
    s.ok(&["checkpoint", "-e", archive, "c1"]);
    let name = p.name("rootfs-from-stasis");
    podman_ok(&["container", "restore", "--import", archive, "--name", &name]);
    assert_eq!(
        podman_ok(&["exec", &name, "sh", "-c", VIEW]),
        CHANGED,
        "stasis's rootfs changes, restored by Podman"
    );
}

#[test]
fn stasis_export_restores_in_podman_after_the_original_is_removed() {
    let s = Store::with_image();
    let p = Podman::new();
    s.run_counter("c1");
    let before = s.count_at_least("c1", 10);
    let archive = s.path().join("gone.tar.zst");
    let archive = archive.to_str().unwrap();
    s.ok(&["checkpoint", "-e", archive, "c1"]);
    // As on another machine: nothing of the original container remains here.
    s.ok(&["rm", "-f", "c1"]);
    let name = p.name("after-rm");
    let out = podman(&["container", "restore", "--import", archive, "--name", &name]);
    assert!(
        out.status.success(),
        "Podman cannot restore a stasis export whose container was removed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = poll("the counter in Podman", Duration::from_secs(10), || {
        p.try_count(&name)
    });
    assert!(first >= before, "restarted: {first} < {before}");
    p.count_at_least(&name, first + 2);
    // Podman must not have written into stasis's store.
    let stray = common::dir_entries(&s.runroot.join("containers"));
    assert!(
        stray.is_empty(),
        "Podman wrote into stasis's runroot: {stray:?}"
    );
}
