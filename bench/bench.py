#!/usr/bin/env python3
"""Checkpoint/restore benchmark: stasis against Podman 4.3, same runc, same CRIU, same image.

Run it through bench/run.sh (which installs dependencies and builds stasis). Standard library
only. See BENCHMARKS.md for what is measured and how.
"""

import argparse
import ctypes
import datetime
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PREFIX = "stasis-bench-"
IMAGE_REF = "localhost/stasis-bench/memhog:latest"
STASIS_ROOT = "/var/lib/stasis-bench"
STASIS_RUNROOT = "/run/stasis-bench"
TINY_CMD = ["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done"]
SUM_CMD = ("rm -f /tmp/sum; touch /tmp/sum.req; n=0; "
           "while [ ! -e /tmp/sum ]; do sleep 0.02; n=$((n+1)); [ $n -lt 3000 ] || exit 1; done; "
           "cat /tmp/sum")
CMD_TIMEOUT = 900

# ptrace(2) constants (x86_64 / generic Linux)
PTRACE_TRACEME, PTRACE_CONT, PTRACE_SETOPTIONS = 0, 7, 0x4200
PTRACE_O_TRACEEXEC, PTRACE_O_TRACEEXIT, PTRACE_O_EXITKILL = 0x10, 0x40, 0x100000
PTRACE_EVENT_EXEC, PTRACE_EVENT_EXIT = 4, 6

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_libc.ptrace.restype = ctypes.c_long


class BenchError(Exception):
    pass


class CorrectnessError(BenchError):
    """The restored workload is not the checkpointed one: never retried."""


class Interrupted(Exception):
    pass


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def _ptrace(req, pid, addr, data):
    if _libc.ptrace(req, pid, ctypes.c_void_p(addr), ctypes.c_void_p(data)) == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace({req}): {os.strerror(err)}")


def _vm_hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def measured(argv, out_path, err_path, timeout=CMD_TIMEOUT):
    """Runs argv, timing it and catching the peak RSS of that one process.

    The child is ptraced with PTRACE_O_TRACEEXIT only (threads it creates share its memory,
    forked children are not traced): when it exits it stops once more, with its address space
    still mapped, and its /proc/PID/status VmHWM is read there. That is the engine process's own
    peak RSS. wait4()'s ru_maxrss (what GNU time's %M prints) is kept too: it is the max over the
    process and every descendant it waited for (runc, criu, ...).
    """
    t_real = time.time()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.setsid()  # Ctrl-C reaches the harness only; it stops the engine itself
            fd_in = os.open("/dev/null", os.O_RDONLY)
            fd_out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            fd_err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd_in, 0)
            os.dup2(fd_out, 1)
            os.dup2(fd_err, 2)
            if _libc.ptrace(PTRACE_TRACEME, 0, None, None) == -1:
                os._exit(126)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    hwm = None
    execs = 0
    timed_out = []

    def on_timeout():
        timed_out.append(True)
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    timer = threading.Timer(timeout, on_timeout)
    timer.start()
    try:
        _, status = os.waitpid(pid, 0)  # the SIGTRAP stop after execve
        if os.WIFSTOPPED(status):
            _ptrace(PTRACE_SETOPTIONS, pid, 0,
                    PTRACE_O_TRACEEXIT | PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL)
            _ptrace(PTRACE_CONT, pid, 0, 0)
            while True:
                _, status, ru = os.wait4(pid, 0)
                if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                    break
                sig = os.WSTOPSIG(status)
                event = status >> 16
                deliver = 0
                if sig == signal.SIGTRAP and event == PTRACE_EVENT_EXIT:
                    hwm = _vm_hwm_kib(pid)
                elif sig == signal.SIGTRAP and event == PTRACE_EVENT_EXEC:
                    execs += 1  # the engine re-executed itself: VmHWM is the new image's
                elif event == 0:
                    deliver = sig  # an ordinary signal: hand it on
                _ptrace(PTRACE_CONT, pid, 0, deliver)
        else:
            _, status, ru = os.wait4(pid, 0)
    except BaseException:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
        raise
    finally:
        timer.cancel()
    wall = time.monotonic() - t0
    if timed_out:
        raise BenchError(f"timeout after {timeout}s: {shlex.join(argv)}")
    rc = os.waitstatus_to_exitcode(status)
    return {
        "argv": argv, "rc": rc, "wall_s": wall, "t_start": t_real,
        "engine_hwm_kib": hwm, "tree_maxrss_kib": ru.ru_maxrss, "engine_execs": execs,
        "stdout": Path(out_path).read_text(errors="replace"),
        "stderr": Path(err_path).read_text(errors="replace"),
    }


def run(argv, check=True, timeout=300, capture=True):
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=capture, text=True,
                           timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"timeout after {timeout}s: {shlex.join(argv)}") from e
    if check and p.returncode != 0:
        err = (p.stderr or "").strip()[-2000:]
        raise BenchError(f"{shlex.join(argv)} failed (exit {p.returncode}): {err}")
    return p


def size_mib(size):
    if size == "tiny":
        return 0
    m = re.fullmatch(r"(\d+)([MG])", size)
    if not m:
        raise SystemExit(f"bad size {size!r}: use tiny, NNNM or NG")
    return int(m.group(1)) * (1024 if m.group(2) == "G" else 1)


class Engine:
    def __init__(self, name, base):
        self.name = name
        self.base = base
        self.created = set()

    def cmd(self, *args):
        return self.base + list(args)

    def run_container(self, name, argv):
        self.created.add(name)
        run(self.cmd("run", "-d", "--name", name, IMAGE_REF, *argv))

    def exec_out(self, name, argv, check=True, timeout=120):
        return run(self.cmd("exec", name, *argv), check=check, timeout=timeout)

    def rm(self, names):
        for n in names:
            run(self.cmd("rm", "-f", n), check=False, timeout=120)
            self.created.discard(n)

    def checkpoint_argv(self, name, archive, compress, stats):
        a = self.cmd("container", "checkpoint", "--export", str(archive))
        if compress:
            a += ["-c", compress]
        if stats:
            a.append("--print-stats")
        return a + [name]

    def restore_argv(self, archive, new_name, stats):
        a = self.cmd("container", "restore", "--import", str(archive), "--name", new_name)
        if stats:
            a.append("--print-stats")
        self.created.add(new_name)
        return a

    def image_id(self):
        if self.name == "podman":
            p = run(self.cmd("image", "inspect", "--format", "{{.Id}}", IMAGE_REF))
            return p.stdout.strip().removeprefix("sha256:")
        p = run(self.cmd("image", "inspect", IMAGE_REF))
        data = json.loads(p.stdout)
        if isinstance(data, list):
            data = data[0]
        return str(data.get("Id") or data.get("id")).removeprefix("sha256:")


def read_float_lines(text):
    out = []
    for line in text.split():
        try:
            out.append(float(line))
        except ValueError:
            pass
    return out


class Bench:
    def __init__(self, cfg):
        self.cfg = cfg
        self.failures = []
        self.retries = []
        self.records = []
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.results_dir = Path(cfg.results)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.results_dir / f"{stamp}.jsonl"
        self.table_path = self.results_dir / f"{stamp}.md"
        self.work = Path(tempfile.mkdtemp(prefix="stasis-bench.", dir="/var/tmp"))
        self.engines = {}
        self.podman_image_loaded = False
        self.pending = []

    # ---------- setup ----------
    def emit(self, rec):
        if rec.get("op") in ("checkpoint", "restore"):
            self.pending.append(rec)  # kept only if the whole cycle succeeds
            return
        self.write(rec)

    def write(self, rec):
        if not rec.get("failed_attempt"):
            self.records.append(rec)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")

    def machine(self):
        def first_line(argv):
            try:
                return run(argv, check=False).stdout.strip().splitlines()[0]
            except (IndexError, BenchError, OSError):
                return "?"
        mem = "?"
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = f"{int(line.split()[1]) / 1048576:.1f} GiB"
        rev = run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], check=False)
        dirty = run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                    check=False)
        return {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "nproc": os.cpu_count(), "memory": mem, "kernel": os.uname().release,
            "criu": "criu " + first_line(["criu", "--version"]).removeprefix("Version:").strip(),
            "runc": first_line(["runc", "--version"]),
            "podman": first_line(["podman", "--version"]),
            "conmon": first_line(["conmon", "--version"]),
            "loadavg": Path("/proc/loadavg").read_text().split()[:3],
            "stasis": (first_line([self.cfg.stasis, "--version"]) if self.cfg.stasis else "-"),
            "stasis_git": os.environ.get("BENCH_STASIS_REV") or
            ((rev.stdout.strip() or "?") + ("+dirty" if dirty.stdout.strip() else "")),
        }

    def build_image(self):
        memhog = self.work / "memhog"
        run(["gcc", "-static", "-O2", "-o", str(memhog), str(BENCH_DIR / "workload/memhog.c")])
        self.memhog = memhog
        rootfs = Path(self.cfg.test_images) / "rootfs.tar"
        if not rootfs.is_file():
            raise BenchError(f"{rootfs} missing: run scripts/make-test-image.sh")
        tar = self.work / "rootfs.tar"
        shutil.copyfile(rootfs, tar)
        stage = self.work / "stage"
        (stage / "bin").mkdir(parents=True)
        shutil.copy(memhog, stage / "bin/memhog")
        run(["tar", "--numeric-owner", "--owner=0", "--group=0", "--mtime=2024-01-01 00:00:00",
             "-C", str(stage), "-rf", str(tar), "./bin/memhog"])
        run(["podman", "rmi", "-f", IMAGE_REF], check=False)
        run(["podman", "import", "-q", "--change", 'CMD ["/bin/sh"]', "--change", "ENV PATH=/bin",
             str(tar), IMAGE_REF])
        self.podman_image_loaded = True
        self.image_tar = self.work / "image-docker.tar"
        run(["podman", "save", "-q", "--format", "docker-archive", "-o", str(self.image_tar),
             IMAGE_REF])

    def setup_engines(self):
        for name in self.cfg.engines:
            if name == "podman":
                e = Engine("podman", ["podman"])
            elif name == "stasis":
                e = Engine("stasis", [self.cfg.stasis, "--root", STASIS_ROOT,
                                      "--runroot", STASIS_RUNROOT])
                run(e.cmd("image", "load", "-i", str(self.image_tar)))
            else:
                raise SystemExit(f"unknown engine {name!r}")
            self.engines[name] = e
        ids = {n: e.image_id() for n, e in self.engines.items()}
        log(f"image {IMAGE_REF}: " + ", ".join(f"{n} {i[:12]}" for n, i in ids.items()))
        if len(set(ids.values())) > 1:
            raise BenchError(f"engines disagree on the image ID: {ids}")
        if "stasis" in self.engines:
            h = run(self.engines["stasis"].cmd("container", "checkpoint", "--help"), check=False)
            if h.returncode != 0:
                log("WARNING: this stasis has no 'container checkpoint' verb yet; "
                    "its runs will fail and be reported as such")

    # ---------- memory temperature ----------
    def make_cold(self):
        """Cold: drop the page cache, then idle so the VM hands freed memory back to its host
        (free page reporting waits ~2 s); the next first touches fault on the host."""
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        time.sleep(self.cfg.cold_sleep)

    def make_warm(self, mib):
        """Warm: touch (and free) enough memory right before the operation, so the allocations
        it makes get guest pages that the host still backs."""
        if mib > 0:
            run([str(self.memhog), "--touch", str(mib)])

    # ---------- one cycle ----------
    def wait_ready(self, eng, name, mib):
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if mib:
                p = eng.exec_out(name, ["cat", "/tmp/ready"], check=False)
                if p.returncode == 0 and p.stdout.strip():
                    return p.stdout.strip()
            else:
                p = eng.exec_out(name, ["cat", "/tmp/count"], check=False)
                if p.returncode == 0 and p.stdout.strip().isdigit() and int(p.stdout) >= 10:
                    return int(p.stdout)
            time.sleep(0.25)
        raise BenchError(f"{eng.name} {name}: workload not ready after 300 s")

    def state(self, eng, name, mib):
        """The workload's state: memory checksum (memhog) or counter value (tiny)."""
        if mib:
            return eng.exec_out(name, ["sh", "-c", SUM_CMD], timeout=180).stdout.strip()
        for _ in range(20):  # the shell truncates, then writes: a read can see an empty file
            out = eng.exec_out(name, ["cat", "/tmp/count"]).stdout.strip()
            if out.isdigit():
                return int(out)
            time.sleep(0.02)
        raise BenchError(f"{eng.name} {name}: /tmp/count unreadable ({out!r})")

    def verify(self, eng, name, mib, expect, t_start):
        """After a restore: same checksum (memhog) / counter that went on from where it was
        (tiny), and the time at which the restored process ran again (memhog's heartbeat)."""
        resumed = None
        if mib:
            got = self.state(eng, name, mib)
            if got != expect:
                raise CorrectnessError(f"CHECKSUM MISMATCH after {eng.name} restore of {name}: "
                                 f"before checkpoint {expect}, after restore {got}")
            p = eng.exec_out(name, ["cat", "/tmp/resumed"], check=False)
            later = [t for t in read_float_lines(p.stdout) if t >= t_start]
            if not later:
                raise BenchError(f"{eng.name} {name}: no resume heartbeat after the restore")
            resumed = min(later) - t_start
        else:
            c1 = self.state(eng, name, mib)
            time.sleep(0.35)
            c2 = self.state(eng, name, mib)
            if not (c1 >= expect and c2 > c1):
                raise CorrectnessError(f"COUNTER CHECK FAILED after {eng.name} restore of {name}: "
                                 f"{expect} before checkpoint, then {c1}, {c2}")
        return resumed

    def timed(self, eng, argv, label):
        out = self.work / f"{label}.out"
        err = self.work / f"{label}.err"
        r = measured(argv, out, err)
        if r["rc"] != 0:
            raise BenchError(f"{shlex.join(argv)} failed (exit {r['rc']}): "
                             f"{r['stderr'].strip()[-1500:]}")
        stats = None
        if self.cfg.print_stats:
            try:
                stats = json.loads(r["stdout"])
            except ValueError:
                stats = None
        r["stats"] = stats
        return r

    def cycle(self, eng, size, run_no):
        mib = size_mib(size)
        tag = f"{size}-r{run_no}"
        names = [f"{PREFIX}{tag}-{x}" for x in ("a", "b", "c")]
        eng.rm(names)  # leftovers from an interrupted earlier run
        argv = ["/bin/memhog", str(mib)] if mib else TINY_CMD
        eng.run_container(names[0], argv)
        try:
            self.wait_ready(eng, names[0], mib)
            expect = self.state(eng, names[0], mib)
            src = names[0]
            for i, phase in enumerate(("cold", "warm")):
                dst = names[i + 1]
                archive = self.work / f"{eng.name}-{tag}-{phase}.tar.zst"
                base = {"engine": eng.name, "size": size, "mib": mib, "run": run_no,
                        "phase": phase, "loadavg1": float(Path("/proc/loadavg").read_text().split()[0])}
                # checkpoint + export
                self.make_cold() if phase == "cold" else self.make_warm(2 * mib + 512)
                r = self.timed(eng, eng.checkpoint_argv(src, archive, self.cfg.compress,
                                                        self.cfg.print_stats),
                               f"{eng.name}-{tag}-{phase}-ckpt")
                size_b = archive.stat().st_size
                self.emit({**base, "op": "checkpoint", "wall_s": r["wall_s"],
                           "archive_bytes": size_b, "engine_hwm_kib": r["engine_hwm_kib"],
                           "tree_maxrss_kib": r["tree_maxrss_kib"],
                           "engine_execs": r["engine_execs"], "stats": r["stats"]})
                # import + restore
                self.make_cold() if phase == "cold" else self.make_warm(2 * mib + 512)
                r = self.timed(eng, eng.restore_argv(archive, dst, self.cfg.print_stats),
                               f"{eng.name}-{tag}-{phase}-restore")
                resumed = self.verify(eng, dst, mib, expect, r["t_start"])
                running = resumed if resumed is not None else r["wall_s"]
                self.emit({**base, "op": "restore", "wall_s": r["wall_s"],
                           "running_s": running,
                           "running_method": "heartbeat" if resumed is not None else "cmd_end",
                           "archive_bytes": size_b, "engine_hwm_kib": r["engine_hwm_kib"],
                           "tree_maxrss_kib": r["tree_maxrss_kib"],
                           "engine_execs": r["engine_execs"], "stats": r["stats"]})
                log(f"{eng.name:6} {size:>4} run {run_no} {phase}: checkpoint "
                    f"{self.pending[-2]['wall_s']:.2f}s, {size_b / 1e6:.3g} MB; restore "
                    f"{r['wall_s']:.2f}s (running after {running:.2f}s); engine RSS "
                    f"{(self.pending[-2]['engine_hwm_kib'] or 0) / 1024:.0f}/"
                    f"{(r['engine_hwm_kib'] or 0) / 1024:.0f} MiB")
                eng.rm([src])
                archive.unlink()
                src = dst
        except BenchError as e:
            p = run(eng.cmd("ps", "-a"), check=False)
            seen = [ln.split()[-1] + ": " + " ".join(ln.split()[3:-1])[:80]
                    for ln in p.stdout.splitlines() if f"{PREFIX}{tag}-" in ln]
            raise type(e)(f"{e} [ps -a: {'; '.join(seen) or 'none'}]") from e
        finally:
            eng.rm(names)
            for a in self.work.glob(f"{eng.name}-{tag}-*.tar.zst"):
                a.unlink()

    def main_loop(self):
        for run_no in range(1, self.cfg.runs + 1):
            for size in self.cfg.sizes:
                order = list(self.engines)
                if run_no % 2 == 0:
                    order.reverse()  # alternate which engine goes first
                for name in order:
                    self.cycle_with_retries(name, size, run_no)

    def cycle_with_retries(self, name, size, run_no):
        """A cycle that fails for an operational reason (a command failed or timed out) is
        retried up to BENCH_RETRIES times; the failed attempt is logged (failed_attempt in the
        JSON lines, "Retried" under the table). A correctness failure is never retried."""
        for attempt in range(self.cfg.retries + 1):
            self.pending = []
            try:
                self.cycle(self.engines[name], size, run_no)
            except BenchError as e:
                for rec in self.pending:
                    self.write({**rec, "failed_attempt": True})
                msg = str(e)
                final = isinstance(e, CorrectnessError) or attempt == self.cfg.retries
                log(f"{'FAILED' if final else 'failed, retrying'}: {name} {size} run {run_no}: "
                    f"{msg}")
                rec = {"engine": name, "size": size, "run": run_no, "error": msg,
                       "op": "failure" if final else "retry"}
                self.write(rec)
                if final:
                    self.failures.append(rec)
                    return
                self.retries.append(rec)
            else:
                for rec in self.pending:
                    self.write(rec)
                return

    # ---------- cleanup ----------
    def cleanup(self):
        for eng in self.engines.values():
            eng.rm(sorted(eng.created))
        try:
            p = run(["podman", "ps", "-a", "--format", "{{.Names}}"], check=False)
            stale = [n for n in p.stdout.split() if n.startswith(PREFIX)]
            for n in stale:
                run(["podman", "rm", "-f", n], check=False)
        except (BenchError, OSError):
            pass
        if self.podman_image_loaded:
            run(["podman", "rmi", "-f", IMAGE_REF], check=False)
        if "stasis" in self.engines:
            e = self.engines["stasis"]
            run(e.cmd("rmi", "-f", IMAGE_REF), check=False)
            with open("/proc/self/mountinfo") as f:
                mounts = [ln.split()[4] for ln in f]
            busy = [m for m in mounts if m.startswith((STASIS_ROOT, STASIS_RUNROOT))]
            if busy:
                log(f"WARNING: mounts left under the bench store, not removing it: {busy[:3]}")
            else:
                shutil.rmtree(STASIS_ROOT, ignore_errors=True)
                shutil.rmtree(STASIS_RUNROOT, ignore_errors=True)
        shutil.rmtree(self.work, ignore_errors=True)

    # ---------- report ----------
    def report(self, machine):
        text = render_table(self.records, self.cfg, machine, self.failures, self.retries)
        self.table_path.write_text(text)
        print(text)
        log(f"raw results: {self.jsonl}\nbench: table: {self.table_path}")


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


METRICS = [
    # (label, op, field, scale, fmt)
    ("checkpoint+export (s)", "checkpoint", "wall_s", 1, "{:.2f}"),
    ("archive size (MB)", "checkpoint", "archive_bytes", 1e-6, "{:.3g}"),
    ("import+restore (s)", "restore", "wall_s", 1, "{:.2f}"),
    ("restore until running (s)", "restore", "running_s", 1, "{:.2f}"),
    ("engine peak RSS, checkpoint (MiB)", "checkpoint", "engine_hwm_kib", 1 / 1024, "{:.0f}"),
    ("engine peak RSS, restore (MiB)", "restore", "engine_hwm_kib", 1 / 1024, "{:.0f}"),
    ("process tree max RSS, checkpoint (MiB)", "checkpoint", "tree_maxrss_kib", 1 / 1024,
     "{:.0f}"),
    ("process tree max RSS, restore (MiB)", "restore", "tree_maxrss_kib", 1 / 1024, "{:.0f}"),
]


def medians(records):
    """{(size, phase, engine, label): (median, n)}"""
    out = {}
    for label, op, field, scale, _ in METRICS:
        groups = {}
        for r in records:
            if r.get("op") == op and r.get(field) is not None:
                groups.setdefault((r["size"], r["phase"], r["engine"]), []).append(
                    r[field] * scale)
        for k, vals in groups.items():
            out[k + (label,)] = (statistics.median(vals), len(vals))
    return out


def render_table(records, cfg, machine, failures, retries=()):
    m = medians(records)
    engines = cfg.engines
    lines = [f"## Results {machine['date']}", "",
             f"Machine: {machine['nproc']} CPUs, {machine['memory']}, kernel {machine['kernel']}; "
             f"{machine['criu']}; {machine['runc']}; {machine['podman']}; "
             f"{machine['conmon']}; stasis {machine['stasis_git']}.",
             f"Runs: {cfg.runs} per engine, size and temperature (median shown); compression: "
             f"{cfg.compress or 'engine default (zstd)'}.", ""]
    head = "| size | mem | metric | " + " | ".join(engines)
    sep = "|---|---|---|" + "---:|" * len(engines)
    ratio = "stasis" in engines and "podman" in engines
    if ratio:
        head += " | stasis/podman"
        sep += "---:|"
    lines += [head + " |", sep]
    failed = {(f["engine"], f["size"]) for f in failures}
    for size in cfg.sizes:
        for phase in ("cold", "warm"):
            for label, _op, _f, _s, fmt in METRICS:
                if size == "tiny" and label.startswith("restore until"):
                    continue
                row = [size, phase, label]
                vals = {}
                for e in engines:
                    v = m.get((size, phase, e, label))
                    if v is None:
                        row.append("FAILED" if (e, size) in failed else "n/a")
                    else:
                        vals[e] = v[0]
                        row.append(fmt.format(v[0]) + ("" if v[1] == cfg.runs else f" (n={v[1]})"))
                if ratio:
                    if vals.get("stasis") is not None and vals.get("podman"):
                        row.append(f"{vals['stasis'] / vals['podman']:.2f}")
                    else:
                        row.append("-")
                lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if ratio:
        lines += targets(m, cfg), ""
    lines += raw_table(records), ""
    if retries:
        lines.append("Retried (an attempt failed for an operational reason; its numbers are "
                     "not in the medians):")
        for f in retries:
            lines.append(f"- {f['engine']} {f['size']} run {f['run']}: {f['error'][:300]}")
        lines.append("")
    if failures:
        lines.append("Failures:")
        for f in failures:
            lines.append(f"- {f['engine']} {f['size']} run {f['run']}: {f['error'][:300]}")
        lines.append("")
    return "\n".join(lines)


def raw_table(records):
    """Every measurement, one row per engine, size, run and temperature."""
    rows = {}
    for r in records:
        if r.get("op") in ("checkpoint", "restore"):
            rows.setdefault((r["size"], r["engine"], r["run"], r["phase"]), {})[r["op"]] = r
    out = ["Raw numbers (s, MB, MiB; RSS = engine process peak, checkpoint/restore; "
           "running* = restore command end, the tiny workload has no heartbeat):", "",
           "| size | engine | run | mem | checkpoint | archive | restore | running | RSS |",
           "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    order = {"cold": 0, "warm": 1}
    for (size, eng, run_no, phase), ops in sorted(
            rows.items(), key=lambda kv: (size_mib(kv[0][0]), kv[0][1], kv[0][2], order[kv[0][3]])):
        c, r = ops.get("checkpoint", {}), ops.get("restore", {})

        def f(d, k, fmt, scale=1.0):
            return fmt.format(d[k] * scale) if d.get(k) is not None else "-"
        star = "*" if r.get("running_method") == "cmd_end" else ""
        rss = f"{f(c, 'engine_hwm_kib', '{:.0f}', 1 / 1024)}/{f(r, 'engine_hwm_kib', '{:.0f}', 1 / 1024)}"
        out.append(f"| {size} | {eng} | {run_no} | {phase} | {f(c, 'wall_s', '{:.2f}')} | "
                   f"{f(c, 'archive_bytes', '{:.3g}', 1e-6)} | {f(r, 'wall_s', '{:.2f}')} | "
                   f"{f(r, 'running_s', '{:.2f}')}{star} | {rss} |")
    return "\n".join(out)


def targets(m, cfg):
    """The issue's targets, stasis/Podman ratios (both temperatures are checked)."""
    checks = [("1G", "checkpoint+export (s)", 0.25), ("1G", "import+restore (s)", 0.15),
              ("1G", "archive size (MB)", 1.05), ("tiny", "checkpoint+export (s)", 0.5),
              ("tiny", "import+restore (s)", 0.5)]
    out = ["| target | cold | warm |", "|---|---|---|"]
    for size, label, limit in checks:
        if size not in cfg.sizes:
            continue
        cells = []
        for phase in ("cold", "warm"):
            s = m.get((size, phase, "stasis", label))
            p = m.get((size, phase, "podman", label))
            if s is None or p is None or not p[0]:
                cells.append("not measured")
            else:
                r = s[0] / p[0]
                cells.append(f"{r:.2f} {'met' if r <= limit else 'NOT met'}")
        out.append(f"| {size} {label} <= {limit} x Podman | " + " | ".join(cells) + " |")
    peak = [v[0] for k, v in m.items()
            if k[2] == "stasis" and k[3].startswith("engine peak RSS")]
    out.append("| stasis engine peak RSS <= 64 MiB | "
               + (f"max {max(peak):.0f} MiB {'met' if max(peak) <= 64 else 'NOT met'}"
                  if peak else "not measured") + " | |")
    return "\n".join(out)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny + 256M, 1 run")
    ap.add_argument("--stasis", default=os.environ.get("BENCH_STASIS_BIN", ""),
                    help="stasis binary (run.sh builds one)")
    ap.add_argument("--results", default=str(BENCH_DIR / "results"))
    ap.add_argument("--report", metavar="JSONL",
                    help="only print the table of an earlier run's raw results")
    a = ap.parse_args()
    env = os.environ
    a.sizes = env.get("BENCH_SIZES", "tiny 256M 1G").split()
    a.runs = int(env.get("BENCH_RUNS", "3"))
    if a.quick:
        a.sizes = env.get("BENCH_SIZES", "tiny 256M").split()
        a.runs = int(env.get("BENCH_RUNS", "1"))
    a.engines = env.get("BENCH_ENGINES", "stasis podman").split()
    a.cold_sleep = float(env.get("BENCH_COLD_SLEEP", "5"))
    a.compress = env.get("BENCH_COMPRESS", "")
    a.print_stats = env.get("BENCH_PRINT_STATS", "1") == "1"
    a.retries = int(env.get("BENCH_RETRIES", "1"))
    a.test_images = env.get("STASIS_TEST_IMAGES", "/var/tmp/stasis-test-images")
    for s in a.sizes:
        size_mib(s)
    if "stasis" in a.engines and not a.stasis and not a.report:
        raise SystemExit("no stasis binary: set BENCH_STASIS_BIN or use bench/run.sh")
    return a


def main():
    cfg = parse_args()
    if cfg.report:
        recs = [json.loads(ln) for ln in Path(cfg.report).read_text().splitlines() if ln]
        head = next((r for r in recs if r.get("op") == "machine"), None)
        if head:
            cfg.sizes, cfg.engines, cfg.runs = head["sizes"], head["engines"], head["runs"]
            cfg.compress = head.get("compress", "")
        fails = [r for r in recs if r.get("op") == "failure"]
        retried = [r for r in recs if r.get("op") == "retry"]
        kept = [r for r in recs if not r.get("failed_attempt")]
        print(render_table(kept, cfg, head["machine"] if head else {}, fails, retried))
        return 0
    if os.geteuid() != 0:
        raise SystemExit("bench must run as root")

    def on_signal(signum, _frame):
        raise Interrupted(f"signal {signum}")
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    # One benchmark at a time on a machine: runs share container names, the bench store and
    # the image, and would skew each other's timings.
    lock = open("/run/stasis-bench.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        log("another benchmark run holds /run/stasis-bench.lock; waiting for it to finish")
        fcntl.flock(lock, fcntl.LOCK_EX)
    b = Bench(cfg)
    status = 0
    machine = {}
    try:
        machine = b.machine()
        b.emit({"op": "machine", "machine": machine, "sizes": cfg.sizes, "engines": cfg.engines,
                "runs": cfg.runs, "compress": cfg.compress, "cold_sleep": cfg.cold_sleep})
        log(f"sizes {cfg.sizes}, runs {cfg.runs}, engines {cfg.engines}; work dir {b.work}")
        b.build_image()
        b.setup_engines()
        b.main_loop()
        b.report(machine)
        if b.failures:
            log(f"{len(b.failures)} failure(s): the benchmark FAILED")
            status = 1
    except Interrupted as e:
        log(f"interrupted ({e}); cleaning up")
        status = 130
    except Exception as e:  # noqa: BLE001 - report what was measured, then clean up
        log(f"FAILED: {type(e).__name__}: {e}")
        if not isinstance(e, BenchError):
            import traceback
            traceback.print_exc()
        if b.records:
            try:
                b.report(machine)
            except Exception:  # noqa: BLE001
                pass
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        b.cleanup()
    return status


if __name__ == "__main__":
    sys.exit(main())
