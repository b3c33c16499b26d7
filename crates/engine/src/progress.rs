//! Progress of long archive work (export, import) on a terminal; nothing in pipes.

use std::io::{Read, Write};

use indicatif::{ProgressBar, ProgressStyle};

/// A progress display, or nothing when stderr is not a terminal or progress was not asked for.
#[derive(Debug, Clone)]
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// `total`: bytes expected, when known. `show`: the caller's wish (e.g. not `--quiet`).
    pub fn new(show: bool, what: &str, total: Option<u64>) -> Self {
        // SAFETY: isatty only inspects the descriptor.
        let tty = unsafe { libc::isatty(2) } == 1;
        if !show || !tty {
            return Progress(None);
        }
        let bar = match total {
            Some(n) => {
                let b = ProgressBar::new(n);
                b.set_style(
                    ProgressStyle::with_template(
                        "{msg} {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b
            }
            None => {
                let b = ProgressBar::new_spinner();
                b.set_style(
                    ProgressStyle::with_template(
                        "{spinner} {msg} {binary_bytes} {binary_bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                b
            }
        };
        bar.set_message(what.to_string());
        Progress(Some(bar))
    }

    pub fn hidden() -> Self {
        Progress(None)
    }

    /// Counts `n` more bytes done.
    pub fn add(&self, n: usize) {
        if let Some(b) = &self.0 {
            b.inc(n as u64);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// Counts bytes written through it into a [`Progress`].
#[derive(Debug)]
pub struct CountingWriter<W> {
    pub inner: W,
    pub progress: Progress,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.add(n);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Counts bytes read through it into a [`Progress`].
#[derive(Debug)]
pub struct CountingReader<R> {
    pub inner: R,
    pub progress: Progress,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n);
        Ok(n)
    }
}

/// With `STASIS_TIMING=1`, prints `label` and the time since the process started to stderr:
/// where a checkpoint or restore spends its time, for profiling.
pub fn mark(label: &str) {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Option<Instant>> = OnceLock::new();
    let start = START.get_or_init(|| {
        std::env::var("STASIS_TIMING")
            .is_ok_and(|v| v == "1")
            .then(Instant::now)
    });
    if let Some(t) = start {
        eprintln!("timing: {:8.3} ms {label}", t.elapsed().as_secs_f64() * 1e3);
    }
}
