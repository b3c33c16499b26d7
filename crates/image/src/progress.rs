//! Download progress: `indicatif` bars on a terminal, nothing in pipes or when not asked for.

use std::io::{IsTerminal, Read};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Progress display of one pull.
#[derive(Debug)]
pub(crate) struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    /// Shows bars only when `wanted` and stderr is a terminal.
    pub(crate) fn new(wanted: bool) -> Self {
        let multi = (wanted && std::io::stderr().is_terminal()).then(MultiProgress::new);
        Self { multi }
    }

    /// Wraps `reader` so that reading it advances a bar labelled `label`.
    pub(crate) fn wrap(
        &self,
        reader: Box<dyn Read + Send>,
        len: Option<u64>,
        label: &str,
    ) -> (Box<dyn Read + Send>, Option<ProgressBar>) {
        let Some(multi) = &self.multi else {
            return (reader, None);
        };
        let bar = multi.add(len.map_or_else(ProgressBar::new_spinner, ProgressBar::new));
        let template = if len.is_some() {
            "{msg:20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}"
        } else {
            "{msg:20} {spinner} {bytes} {bytes_per_sec}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_string());
        (Box::new(bar.wrap_read(reader)), Some(bar))
    }

    /// Prints a line above the bars (or nothing when quiet).
    pub(crate) fn println(&self, line: &str) {
        if let Some(multi) = &self.multi {
            let _ = multi.println(line);
        }
    }
}
