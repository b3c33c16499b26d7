//! `import_rootfs`: one root filesystem tarball becomes a one-layer image with a minimal OCI
//! config, like `podman import`.

use std::io::{self, Read};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::layer::{unpack_layer, Expect, UnpackedLayer};
use crate::manifest::Platform;
use crate::stage::{Record, Stage};
use crate::store::{local_name, ImageStore};
use crate::{parse_config, Image, ImageError, ImportConfig};

/// Chunks handed from the caller's reader to the unpacking thread.
const CHUNK: usize = 1 << 16;

/// A `Read + Send + 'static` view of chunks sent over a channel, so a caller's borrowed,
/// non-`Send` reader can feed the streaming decompressor running on a scoped thread.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0), // sender finished
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// RFC 3339 UTC timestamp of `secs` since the epoch (civil-from-days, proleptic Gregorian).
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub(crate) fn import_rootfs(
    store: &ImageStore,
    tar: &mut dyn Read,
    reference: Option<&str>,
    config: ImportConfig,
) -> Result<Image, ImageError> {
    let name = reference.map(local_name).transpose()?;
    let mut stage = Stage::new(store)?;
    let layers_dir = store.layers_dir.clone();
    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(16);
    let layer: Result<UnpackedLayer, ImageError> = std::thread::scope(|s| {
        let worker = s.spawn(move || {
            let reader = ChannelReader {
                rx,
                buf: Vec::new(),
                pos: 0,
            };
            unpack_layer(
                Box::new(reader),
                &layers_dir,
                "imported root filesystem",
                &Expect::default(),
            )
        });
        loop {
            let mut chunk = vec![0u8; CHUNK];
            let sent = match tar.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    chunk.truncate(n);
                    tx.send(Ok(chunk))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    break;
                }
            };
            if sent.is_err() {
                break; // the unpacker stopped early; its error says why
            }
        }
        drop(tx);
        worker.join().unwrap_or_else(|_| {
            Err(ImageError::Io {
                context: "unpacking the imported root filesystem".into(),
                source: io::Error::other("the unpacking thread panicked"),
            })
        })
    });
    let layer = layer?;
    let diff_id = layer.diff_id.clone();
    stage.add_layer(layer);

    let now = rfc3339(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    let platform = Platform::host();
    let mut exec = serde_json::Map::new();
    if !config.env.is_empty() {
        exec.insert("Env".into(), json!(config.env));
    }
    if let Some(cmd) = &config.cmd {
        exec.insert("Cmd".into(), json!(cmd));
    }
    if let Some(ep) = &config.entrypoint {
        exec.insert("Entrypoint".into(), json!(ep));
    }
    if let Some(wd) = &config.workdir {
        exec.insert("WorkingDir".into(), json!(wd));
    }
    let doc = json!({
        "created": now,
        "architecture": platform.architecture,
        "os": platform.os,
        "config": exec,
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created": now, "created_by": "/bin/sh -c #(nop) ADD file in / ", "comment": "imported from tarball" }],
    });
    let config_bytes = serde_json::to_vec(&doc).map_err(|e| ImageError::BadConfig {
        what: "generated config".into(),
        detail: e.to_string(),
    })?;
    let (parsed, diff_ids) = parse_config("generated config", &config_bytes)?;
    let id = stage.add_blob(&config_bytes)?;
    let mut images = stage.commit(vec![Record {
        id: id.trim_start_matches("sha256:").to_string(),
        manifest_digest: None,
        created: parsed.created().clone(),
        names: name.into_iter().collect(),
        layers: diff_ids,
    }])?;
    images.pop().ok_or_else(|| ImageError::NotFound(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_704_067_200), "2024-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400 + 3661), "2000-02-29T01:01:01Z");
    }

    #[test]
    fn channel_reader_reassembles() {
        let (tx, rx) = mpsc::sync_channel(4);
        tx.send(Ok(b"ab".to_vec())).unwrap();
        tx.send(Ok(Vec::new())).unwrap();
        tx.send(Ok(b"cde".to_vec())).unwrap();
        drop(tx);
        let mut r = ChannelReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        };
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(out, "abcde");
    }
}
