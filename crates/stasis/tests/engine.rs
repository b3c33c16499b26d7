//! Integration tests of the engine (issue 2): the real `stasis` binary on real runc and conmon,
//! each test in a store of its own under /var/tmp. Needs root, runc, conmon and the test image
//! (built by scripts/make-test-image.sh when missing).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{
    dir_entries, image_id, is_full_id, poll, sha256_hex, tar_bytes, test_images, Store, TarEntry,
    IMAGE,
};

/// Starts a detached container and returns its ID.
fn run_detached(s: &Store, name: &str, cmd: &[&str]) -> String {
    run_detached_with(s, &[], name, cmd)
}

/// Starts a detached container with extra `run` options and returns its ID.
fn run_detached_with(s: &Store, opts: &[&str], name: &str, cmd: &[&str]) -> String {
    let mut args = vec!["run", "-d"];
    args.extend_from_slice(opts);
    args.extend(["--name", name, IMAGE]);
    args.extend_from_slice(cmd);
    let out = s.ok(&args);
    let id = out.trim().to_string();
    assert!(is_full_id(&id), "run -d printed {out:?}, not an ID");
    id
}

/// The state and exit code recorded in the database row.
fn row_state(s: &Store, id: &str) -> (String, Option<i64>) {
    let r = s
        .container_row(id)
        .unwrap_or_else(|| panic!("no row for {id}"));
    (
        r["state"].as_str().unwrap().to_string(),
        r["exit_code"].as_i64(),
    )
}

#[test]
fn image_load_gives_podmans_id_for_both_archive_formats() {
    let want = image_id();
    for archive in ["busybox-docker.tar", "busybox-oci.tar"] {
        let s = Store::new();
        let path = test_images().join(archive);
        let out = s.ok(&["image", "load", "-i", path.to_str().unwrap()]);
        assert!(
            out.contains(&format!("Loaded image: {IMAGE}")),
            "{archive}: load printed {out:?}"
        );
        let ids = s.ok(&["images", "--no-trunc", "-q"]);
        assert_eq!(ids.trim(), want, "{archive}: images --no-trunc -q");
        assert_eq!(s.ok(&["images", "-q"]).trim(), &want[..12], "{archive}");

        let inspect: serde_json::Value =
            serde_json::from_str(&s.ok(&["image", "inspect", IMAGE])).unwrap();
        let got = inspect[0]["id"]
            .as_str()
            .or_else(|| inspect[0]["Id"].as_str())
            .unwrap_or_else(|| panic!("{archive}: no id in image inspect: {inspect}"));
        assert_eq!(got.trim_start_matches("sha256:"), want, "{archive}");

        let table = s.ok(&["images"]);
        let row = table
            .lines()
            .find(|l| l.starts_with("localhost/stasis-test/busybox "))
            .unwrap_or_else(|| panic!("{archive}: image not listed: {table}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[1], "latest", "{archive}: {row}");
        assert_eq!(cols[2], &want[..12], "{archive}: {row}");

        // The image can also be found by short ID.
        s.ok(&["image", "inspect", &want[..12]]);
        assert_eq!(s.db_rows("image_images").len(), 1, "{archive}");
    }
}

#[test]
fn counter_container_runs_stops_and_is_removed_without_trace() {
    let s = Store::with_image();
    let id = run_detached(
        &s,
        "c1",
        &[
            "sh",
            "-c",
            "i=0; while true; do echo $i > /tmp/count; i=$((i+1)); sleep 0.1; done",
        ],
    );
    let count = || -> u64 {
        let out = s.ok(&["exec", "c1", "cat", "/tmp/count"]);
        out.trim()
            .parse()
            .unwrap_or_else(|e| panic!("exec cat printed {out:?}: {e}"))
    };
    let first = poll("the counter file", Duration::from_secs(10), || {
        s.stasis(&["exec", "c1", "cat", "/tmp/count"])
            .status
            .success()
            .then(count)
    });
    let later = poll("the counter to grow", Duration::from_secs(15), || {
        std::thread::sleep(Duration::from_millis(200));
        let n = count();
        (n > first).then_some(n)
    });
    assert!(later > first);

    // Running, in every view.
    let ps = s.ok(&["ps"]);
    let line = ps
        .lines()
        .find(|l| l.ends_with(" c1"))
        .unwrap_or_else(|| panic!("c1 not in ps: {ps}"));
    assert!(
        line.starts_with(&id[..12]) && line.contains("Up "),
        "{line}"
    );
    assert_eq!(s.ok(&["ps", "-q", "--no-trunc"]).trim(), id);
    assert_eq!(s.ps_entry("c1")["State"], "running");
    assert_eq!(row_state(&s, &id).0, "running");
    let inspect = s.inspect("c1");
    assert_eq!(inspect["Id"], id.as_str());
    assert_eq!(inspect["State"]["Running"], true);
    let pid = inspect["State"]["Pid"].as_i64().unwrap();
    assert!(pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists());
    let netns = inspect["NetworkSettings"]["SandboxKey"]
        .as_str()
        .expect("SandboxKey")
        .to_string();
    let mounts = s.mounts();
    for want in [
        s.root.join("containers").join(&id).join("merged"),
        std::path::PathBuf::from(&netns),
    ] {
        assert!(
            mounts.contains(&want.display().to_string()),
            "{} is not mounted: {mounts:?}",
            want.display()
        );
    }

    // sh as PID 1 has no TERM handler, so the kernel drops TERM: stop must fall back to KILL.
    let start = Instant::now();
    assert_eq!(s.ok(&["stop", "-t", "2", "c1"]).trim(), "c1");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(20), "stop -t 2 took {took:?}");
    let e = s.ps_entry("c1");
    assert_eq!(e["State"], "exited", "{e}");
    assert_eq!(e["ExitCode"], 137, "{e}");
    assert_eq!(row_state(&s, &id), ("exited".into(), Some(137)));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists() || {
            // The PID may have been reused by now; it must at least not be the container's sh.
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .map(|c| !c.contains("while true"))
                .unwrap_or(true)
        }
    );
    assert_eq!(
        s.ok(&["ps", "-q"]).trim(),
        "",
        "ps without -a lists an exited container"
    );
    assert_eq!(s.mounts(), Vec::<String>::new(), "mounts left after stop");

    assert_eq!(s.ok(&["rm", "c1"]).trim(), "c1");
    s.assert_container_gone(&id);
    s.assert_lock_gone(&id);
    s.assert_no_containers();
    assert!(!std::path::Path::new(&netns).exists());
}

#[test]
fn exit_is_recorded_by_conmons_callback() {
    let s = Store::with_image();
    let id = run_detached(&s, "e3", &["sh", "-c", "exit 3"]);
    // No stasis command touches it: only conmon's exit command can record this.
    poll("the row to say exited 3", Duration::from_secs(20), || {
        (row_state(&s, &id) == ("exited".into(), Some(3))).then_some(())
    });
    let row = s.container_row(&id).unwrap();
    assert!(row["finished_at"].is_string(), "{row:?}");
    assert_eq!(row["pid"], serde_json::Value::Null, "{row:?}");
    // The callback released the runtime resources too.
    poll("the mounts to go", Duration::from_secs(10), || {
        s.mounts().is_empty().then_some(())
    });
    assert_eq!(
        dir_entries(&s.runroot.join("runc")),
        Vec::<String>::new(),
        "runc still has the container"
    );
    assert_eq!(s.ok(&["wait", "e3"]).trim(), "3");
    let e = s.ps_entry("e3");
    assert_eq!(
        (e["State"].as_str(), e["ExitCode"].as_i64()),
        (Some("exited"), Some(3))
    );
    assert!(
        e["Status"].as_str().unwrap().starts_with("Exited (3)"),
        "{e}"
    );
    assert_eq!(s.mounts(), Vec::<String>::new());
}

#[test]
fn foreground_run_relays_output_exit_code_and_options() {
    let s = Store::with_image();
    let out = s.stasis(&[
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    s.assert_no_containers();

    let out = s.ok(&[
        "run",
        "--name",
        "opts",
        "-e",
        "K=V w",
        "-w",
        "/tmp",
        "-u",
        "nobody",
        IMAGE,
        "sh",
        "-c",
        "echo $K; pwd; id -u; id -g",
    ]);
    assert_eq!(out, "V w\n/tmp\n65534\n65534\n");
    // Without --rm it stays, exited 0.
    let e = s.ps_entry("opts");
    assert_eq!(
        (e["State"].as_str(), e["ExitCode"].as_i64()),
        (Some("exited"), Some(0))
    );
    let id = e["Id"].as_str().unwrap().to_string();
    assert_eq!(s.mounts(), Vec::<String>::new());

    // The image's defaults when nothing is given: root, "/", the image's PATH.
    assert_eq!(
        s.ok(&["run", "--rm", IMAGE, "sh", "-c", "id -u; pwd; echo $PATH"]),
        "0\n/\n/bin\n"
    );
    s.ok(&["rm", "opts"]);
    s.assert_container_gone(&id);
    s.assert_no_containers();
}

#[test]
fn logs_show_output_and_follow_returns_when_the_container_ends() {
    let s = Store::with_image();
    run_detached(
        &s,
        "l1",
        &["sh", "-c", "echo one; echo two >&2; sleep 1.5; echo three"],
    );
    let start = Instant::now();
    let out = s.stasis_within(&["logs", "-f", "l1"], Duration::from_secs(30));
    assert!(out.status.success(), "{out:?}");
    // It followed: "three" is printed 1.5 s after the start.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\nthree\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "two\n");
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_eq!(s.ps_entry("l1")["State"], "exited");

    let out = s.stasis(&["logs", "l1"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\nthree\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "two\n");
    // `container logs` is the same verb.
    assert_eq!(s.ok(&["container", "logs", "l1"]), "one\nthree\n");
}

#[test]
fn twenty_concurrent_runs_and_removals() {
    const N: usize = 20;
    let s = Store::with_image();
    let ids: Vec<String> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let s = &s;
                sc.spawn(move || {
                    let name = format!("par{i}");
                    let out = s.stasis(&["run", "-d", "--name", &name, IMAGE, "sleep", "600"]);
                    (name, out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                let (name, out) = h.join().unwrap();
                assert!(
                    out.status.success(),
                    "run -d --name {name} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
                assert!(is_full_id(&id), "{name}: {id:?}");
                id
            })
            .collect()
    });
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), N, "IDs not distinct: {ids:?}");
    let listed: BTreeSet<String> = s
        .ok(&["ps", "-a", "-q", "--no-trunc"])
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(listed, ids.iter().cloned().collect::<BTreeSet<_>>());
    let ps = s.ps_json();
    let names: BTreeSet<String> = ps
        .iter()
        .map(|c| c["Names"][0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, (0..N).map(|i| format!("par{i}")).collect());
    assert!(
        ps.iter().all(|c| c["State"] == "running"),
        "not all running: {ps:?}"
    );
    assert_eq!(s.db_rows("containers").len(), N);
    // Each has its rootfs, its shm and its network namespace mounted.
    assert_eq!(s.mounts().len(), 3 * N, "{:?}", s.mounts());

    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let s = &s;
                sc.spawn(move || (i, s.stasis(&["rm", "-f", &format!("par{i}")])))
            })
            .collect();
        for h in handles {
            let (i, out) = h.join().unwrap();
            assert!(
                out.status.success(),
                "rm -f par{i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
    for id in &ids {
        s.assert_container_gone(id);
    }
    s.assert_no_containers();
    assert_eq!(s.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn bad_input_fails_in_one_line_and_leaves_nothing() {
    let s = Store::with_image();
    let id = run_detached(&s, "c1", &["sleep", "600"]);
    let before = s.snapshot();
    let check = |what: &str| s.snapshot().assert_same(&before, what);

    let e = s.fail_with(125, &["run", "--rm", "localhost/no/such:image", "true"]);
    assert!(e.contains("no/such"), "{e}");
    check("run of an unknown image");
    s.fail_with(125, &["create", "localhost/no/such:image", "true"]);
    check("create of an unknown image");

    for verb in [
        &["start", "nosuch"][..],
        &["stop", "nosuch"],
        &["rm", "nosuch"],
        &["rm", "-f", "nosuch"],
        &["kill", "nosuch"],
        &["wait", "nosuch"],
        &["logs", "nosuch"],
        &["exec", "nosuch", "true"],
        &["inspect", "nosuch"],
    ] {
        let e = s.fail_with(125, verb);
        assert!(e.contains("nosuch"), "{verb:?}: {e}");
        check(&verb.join(" "));
    }

    let e = s.fail_with(125, &["run", "-d", "--name", "c1", IMAGE, "sleep", "600"]);
    assert!(e.contains("c1") && e.contains("already in use"), "{e}");
    check("run with a name in use");
    assert_eq!(s.inspect("c1")["Id"], id.as_str());

    let e = s.fail_with(125, &["rm", "c1"]);
    assert!(e.contains("running"), "{e}");
    check("rm of a running container");
    assert_eq!(s.ps_entry("c1")["State"], "running");
    assert_eq!(s.ok(&["exec", "c1", "echo", "alive"]), "alive\n");

    let e = s.fail_with(125, &["run", "--name", "bad/name", IMAGE, "true"]);
    assert!(e.contains("bad/name"), "{e}");
    check("run with an invalid name");

    let e = s.fail_with(125, &["run", "--rm", "-u", "nosuchuser", IMAGE, "true"]);
    assert!(e.contains("nosuchuser"), "{e}");
    check("run as an unknown user");

    for detach in [false, true] {
        let mut args = vec!["run"];
        if detach {
            args.push("-d");
        }
        args.extend([IMAGE, "/no/such/command", "arg"]);
        let e = s.fail_with(127, &args);
        assert!(e.contains("/no/such/command"), "{e}");
        check("run of a missing command");
    }

    // A corrupt archive: the docker-archive cut in half.
    let half = s.path().join("half.tar");
    let full = std::fs::read(test_images().join("busybox-docker.tar")).unwrap();
    std::fs::write(&half, &full[..full.len() / 2]).unwrap();
    s.fail_with(125, &["image", "load", "-i", half.to_str().unwrap()]);
    check("load of a truncated archive");

    // A well-formed docker-archive whose only fault is a layer entry leaving the root.
    let evil = s.path().join("evil.tar");
    std::fs::write(&evil, evil_docker_archive()).unwrap();
    let e = s.fail_with(125, &["image", "load", "-i", evil.to_str().unwrap()]);
    // Refused for the entry, not for a digest or size (those are all right).
    assert!(e.contains("escape"), "{e}");
    check("load of an archive with ../escape");
    let escaped = find_named(s.path(), "escape");
    assert!(
        escaped.is_empty(),
        "the ../escape entry was written: {escaped:?}"
    );
    assert_eq!(s.ok(&["images", "-q", "--no-trunc"]).trim(), image_id());

    // A container that is not running cannot be exec'd or killed.
    let stopped = run_detached(&s, "done", &["true"]);
    s.ok(&["wait", "done"]);
    let before_stopped = s.snapshot();
    for verb in [&["exec", "done", "true"][..], &["kill", "done"]] {
        let e = s.fail_with(125, verb);
        assert!(e.contains("not running"), "{verb:?}: {e}");
        s.snapshot().assert_same(&before_stopped, &verb.join(" "));
    }
    s.ok(&["rm", "done"]);
    s.assert_container_gone(&stopped);

    // The container is unharmed by all of it.
    assert_eq!(s.ps_entry("c1")["State"], "running");
    s.ok(&["rm", "-f", "c1"]);
    s.assert_container_gone(&id);
    s.assert_no_containers();
}

#[test]
fn kill_sends_the_signal_to_a_trapping_process() {
    let s = Store::with_image();
    let id = run_detached(
        &s,
        "k1",
        &[
            "sh",
            "-c",
            "trap 'exit 7' TERM; while true; do sleep 0.1; done",
        ],
    );
    // The trap must be installed before the signal comes: wait until the loop runs.
    poll("the loop to run", Duration::from_secs(10), || {
        let out = s.ok(&["exec", "k1", "ps"]);
        out.contains("sleep").then_some(())
    });
    assert_eq!(s.ok(&["kill", "-s", "TERM", "k1"]).trim(), "k1");
    assert_eq!(s.ok(&["wait", "k1"]).trim(), "7");
    let e = s.ps_entry("k1");
    assert_eq!(
        (e["State"].as_str(), e["ExitCode"].as_i64()),
        (Some("exited"), Some(7))
    );
    assert_eq!(row_state(&s, &id), ("exited".into(), Some(7)));
    assert_eq!(s.mounts(), Vec::<String>::new());
    s.ok(&["rm", "k1"]);
    s.assert_container_gone(&id);
    s.assert_lock_gone(&id);
}

/// A docker-archive that is right in every digest and size, with one layer whose second entry
/// is `../escape`.
fn evil_docker_archive() -> Vec<u8> {
    let layer = tar_bytes(&[
        TarEntry::Dir("etc/"),
        TarEntry::File("etc/ok", b"fine\n"),
        TarEntry::File("../escape", b"should never be written\n"),
    ]);
    let layer_hex = sha256_hex(&layer);
    let config = format!(
        r#"{{"created":"2024-01-01T00:00:00Z","architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer_hex}"]}}}}"#
    );
    let config_hex = sha256_hex(config.as_bytes());
    let manifest = format!(
        r#"[{{"Config":"{config_hex}.json","RepoTags":["localhost/evil:latest"],"Layers":["{layer_hex}.tar"]}}]"#
    );
    let layer_name = format!("{layer_hex}.tar");
    let config_name = format!("{config_hex}.json");
    tar_bytes(&[
        TarEntry::File(&layer_name, &layer),
        TarEntry::File(&config_name, config.as_bytes()),
        TarEntry::File("manifest.json", manifest.as_bytes()),
    ])
}

/// Paths of files named `name` anywhere under `dir`.
fn find_named(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let ft = e.file_type().unwrap();
            if e.file_name() == name {
                found.push(e.path());
            }
            if ft.is_dir() {
                todo.push(e.path());
            }
        }
    }
    found
}

#[test]
fn detached_run_with_rm_removes_the_container_when_it_exits() {
    let s = Store::with_image();
    let id = run_detached_with(&s, &["--rm"], "gone", &["sh", "-c", "exit 2"]);
    poll(
        "the --rm container to be removed",
        Duration::from_secs(20),
        || s.container_row(&id).is_none().then_some(()),
    );
    poll("its storage to go", Duration::from_secs(10), || {
        (!s.root.join("containers").join(&id).exists()).then_some(())
    });
    s.assert_container_gone(&id);
    s.assert_no_containers();
}

#[test]
fn exec_of_a_missing_command_exits_127() {
    let s = Store::with_image();
    run_detached(&s, "x1", &["sleep", "600"]);
    let e = s.fail_with(127, &["exec", "x1", "/no/such/command"]);
    assert!(e.contains("/no/such/command"), "{e}");
    // A command that exists but cannot be executed: Podman's 126.
    s.fail_with(126, &["exec", "x1", "/etc/passwd"]);
    assert_eq!(s.ps_entry("x1")["State"], "running");
}

#[test]
fn removed_containers_leave_no_lock_file_of_their_own_when_commands_race_rm() {
    // Container locks are a fixed pool of files (`locks/ctr-XYZ`, by the ID's first three hex
    // digits), never deleted: a lookup racing `rm -f` cannot recreate a per-container file, and
    // every process locks the same file for the same container. `ps` makes the window wide: it
    // reads all rows, then locks the running containers one by one while `rm -f` runs.
    const N: usize = 8;
    let s = Store::with_image();
    let ids: Vec<String> = (0..N)
        .map(|i| run_detached(&s, &format!("r{i}"), &["sleep", "600"]))
        .collect();
    std::thread::scope(|sc| {
        let s = &s;
        let ps = sc.spawn(move || while !s.ok(&["ps", "-q"]).trim().is_empty() {});
        for i in 0..N {
            sc.spawn(move || s.ok(&["rm", "-f", &format!("r{i}")]));
        }
        ps.join().unwrap();
    });
    s.wait_idle(Duration::from_secs(30));
    for id in &ids {
        s.assert_container_gone(id);
    }
    let files = dir_entries(&s.runroot.join("locks"));
    let per_container: Vec<&String> = files
        .iter()
        .filter(|f| ids.iter().any(|id| f.contains(id.as_str())))
        .collect();
    assert!(
        per_container.is_empty(),
        "removed containers left lock files named after them: {per_container:?}"
    );
    let buckets: std::collections::BTreeSet<String> =
        ids.iter().map(|id| format!("ctr-{}", &id[..3])).collect();
    for f in &files {
        let name = f.rsplit('/').next().unwrap_or(f);
        assert!(
            buckets.contains(name),
            "unexpected lock file {f}: only the pool files of these containers may exist"
        );
    }
}
