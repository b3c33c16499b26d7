//! `logs`: the container's output, read back from conmon's k8s-file log
//! (`<RFC3339 time> <stdout|stderr> <F|P> <text>` per line).

use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::time::Duration;

use crate::db::State;
use crate::{Engine, EngineError};

/// One parsed log line.
#[derive(Debug, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub time: &'a str,
    pub stderr: bool,
    /// `false` for a partial line (no newline follows its text).
    pub full: bool,
    pub text: &'a str,
}

/// Parses one k8s-file line (without its newline). `None` for malformed lines.
pub fn parse_line(line: &str) -> Option<LogLine<'_>> {
    let mut it = line.splitn(4, ' ');
    let time = it.next()?;
    let stream = it.next()?;
    let tag = it.next()?;
    let text = it.next().unwrap_or("");
    Some(LogLine {
        time,
        stderr: stream == "stderr",
        full: tag.starts_with('F'),
        text,
    })
}

impl Engine {
    /// Writes the container's log to `out`/`err`; with `follow`, keeps going until it exits.
    pub fn logs(
        &self,
        key: &str,
        follow: bool,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Result<(), EngineError> {
        let c = self.container(key)?;
        let path = self.layout.log_path(&c.id);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(EngineError::io(&path, e)),
        };
        let mut reader = BufReader::new(file);
        let mut pending = String::new();
        loop {
            let mut line = String::new();
            let n = reader
                .read_line(&mut line)
                .map_err(|e| EngineError::io(&path, e))?;
            if n > 0 && line.ends_with('\n') {
                pending.push_str(&line);
                let l = pending.trim_end_matches('\n');
                if let Some(p) = parse_line(l) {
                    let w: &mut dyn Write = if p.stderr { err } else { out };
                    let _ = w.write_all(p.text.as_bytes());
                    if p.full {
                        let _ = w.write_all(b"\n");
                    }
                }
                pending.clear();
                continue;
            }
            // At the end of what is written so far (maybe mid-line).
            pending.push_str(&line);
            let _ = out.flush();
            if !follow {
                return Ok(());
            }
            let cur = self.container(&c.id)?;
            if !matches!(cur.state, State::Running | State::Created) {
                // One last read for lines written just before the exit.
                let pos = reader
                    .stream_position()
                    .map_err(|e| EngineError::io(&path, e))?;
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(pos);
                if size <= pos {
                    return Ok(());
                }
                reader
                    .seek(SeekFrom::Start(pos))
                    .map_err(|e| EngineError::io(&path, e))?;
                continue;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_k8s_file_lines() {
        let l = parse_line("2026-12-04T14:44:34.659123614+00:00 stdout F hello world").unwrap();
        assert_eq!(l.text, "hello world");
        assert!(l.full && !l.stderr);
        let p = parse_line("2026-12-04T14:44:34.6+00:00 stderr P part").unwrap();
        assert!(p.stderr && !p.full);
        assert_eq!(parse_line("garbage"), None);
    }
}
