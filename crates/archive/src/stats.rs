//! CRIU's `stats-dump` / `stats-restore` images and Podman's `--print-stats` JSON.
//!
//! File layout (CRIU image, as go-criu's `readStatisticsFile` reads it): LE u32 `0x55105940`
//! (image-service magic), LE u32 `0x57093306` (stats magic), LE u32 payload size, then the
//! protobuf `stats_entry { optional dump_stats_entry dump = 1; optional restore_stats_entry
//! restore = 2; }` (field numbers from CRIU 4.2.1 `images/stats.proto`). The protobuf is decoded
//! by hand; unknown fields are skipped, missing ones read as 0.

use serde::Serialize;
use std::time::Duration;

/// CRIU image-service magic (first word of every image).
pub const IMG_SERVICE_MAGIC: u32 = 0x5510_5940;
/// Magic of the stats image.
pub const STATS_MAGIC: u32 = 0x5709_3306;

/// Errors reading a stats image; they name the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    /// Fewer bytes than the header or the announced payload.
    #[error("{file}: truncated CRIU statistics image ({have} bytes, {need} needed); the file was cut short, re-run the checkpoint or skip --print-stats")]
    Truncated {
        /// File name.
        file: String,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// One of the two magic numbers is wrong.
    #[error("{file}: not a CRIU statistics image (magic {found:#010x}, expected {expected:#010x}); the file is damaged or of another kind")]
    BadMagic {
        /// File name.
        file: String,
        /// Magic found.
        found: u32,
        /// Magic expected.
        expected: u32,
    },
    /// The protobuf payload is malformed.
    #[error(
        "{file}: malformed statistics payload at byte {offset}: {reason}; the file is damaged"
    )]
    Protobuf {
        /// File name.
        file: String,
        /// Offset inside the payload.
        offset: usize,
        /// What went wrong.
        reason: &'static str,
    },
    /// The image holds no entry of the wanted kind (e.g. `stats-dump` without `dump`).
    #[error("{file}: the statistics image has no {what} entry; it was written by another CRIU operation")]
    Missing {
        /// File name.
        file: String,
        /// `dump` or `restore`.
        what: &'static str,
    },
}

/// `dump_stats_entry`: times in microseconds, counts in pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DumpStats {
    /// 1: time to freeze the tree.
    pub freezing_time: u32,
    /// 2: time the tree stayed frozen.
    pub frozen_time: u32,
    /// 3: time to dump memory.
    pub memdump_time: u32,
    /// 4: time to write memory.
    pub memwrite_time: u32,
    /// 5.
    pub pages_scanned: u64,
    /// 6.
    pub pages_skipped_parent: u64,
    /// 7.
    pub pages_written: u64,
    /// 8.
    pub irmap_resolve: u32,
    /// 9.
    pub pages_lazy: u64,
    /// 10.
    pub page_pipes: u64,
    /// 11.
    pub page_pipe_bufs: u64,
    /// 12.
    pub shpages_scanned: u64,
    /// 13.
    pub shpages_skipped_parent: u64,
    /// 14.
    pub shpages_written: u64,
}

/// `restore_stats_entry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestoreStats {
    /// 1.
    pub pages_compared: u64,
    /// 2.
    pub pages_skipped_cow: u64,
    /// 3: microseconds.
    pub forking_time: u32,
    /// 4: microseconds.
    pub restore_time: u32,
    /// 5.
    pub pages_restored: u64,
}

/// `stats_entry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsEntry {
    /// Field 1.
    pub dump: Option<DumpStats>,
    /// Field 2.
    pub restore: Option<RestoreStats>,
}

/// Reads a stats image of any kind; `file` names it in errors.
pub fn parse_stats(file: &str, bytes: &[u8]) -> Result<StatsEntry, StatsError> {
    let trunc = |need| StatsError::Truncated {
        file: file.to_string(),
        need,
        have: bytes.len(),
    };
    if bytes.len() < 12 {
        return Err(trunc(12));
    }
    let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    for (i, expected) in [(0, IMG_SERVICE_MAGIC), (4, STATS_MAGIC)] {
        let found = word(i);
        if found != expected {
            return Err(StatsError::BadMagic {
                file: file.to_string(),
                found,
                expected,
            });
        }
    }
    let size = word(8) as usize;
    let payload = bytes.get(12..12 + size).ok_or_else(|| trunc(12 + size))?;
    decode_entry(payload).map_err(|(offset, reason)| StatsError::Protobuf {
        file: file.to_string(),
        offset,
        reason,
    })
}

/// Reads `stats-dump`, which must hold a dump entry.
pub fn read_dump_stats(bytes: &[u8]) -> Result<DumpStats, StatsError> {
    let file = crate::names::STATS_DUMP;
    parse_stats(file, bytes)?.dump.ok_or(StatsError::Missing {
        file: file.to_string(),
        what: "dump",
    })
}

/// Reads `stats-restore`, which must hold a restore entry.
pub fn read_restore_stats(bytes: &[u8]) -> Result<RestoreStats, StatsError> {
    let file = crate::names::STATS_RESTORE;
    parse_stats(file, bytes)?
        .restore
        .ok_or(StatsError::Missing {
            file: file.to_string(),
            what: "restore",
        })
}

/// Encodes a stats image as CRIU writes it (every field of a present entry is written).
pub fn encode_stats(entry: &StatsEntry) -> Vec<u8> {
    let mut payload = Vec::new();
    if let Some(d) = entry.dump {
        let mut m = Vec::new();
        for (f, v) in [
            (1, d.freezing_time as u64),
            (2, d.frozen_time as u64),
            (3, d.memdump_time as u64),
            (4, d.memwrite_time as u64),
            (5, d.pages_scanned),
            (6, d.pages_skipped_parent),
            (7, d.pages_written),
            (8, d.irmap_resolve as u64),
            (9, d.pages_lazy),
            (10, d.page_pipes),
            (11, d.page_pipe_bufs),
            (12, d.shpages_scanned),
            (13, d.shpages_skipped_parent),
            (14, d.shpages_written),
        ] {
            put_varint(&mut m, f << 3);
            put_varint(&mut m, v);
        }
        put_varint(&mut payload, (1 << 3) | 2);
        put_varint(&mut payload, m.len() as u64);
        payload.extend_from_slice(&m);
    }
    if let Some(r) = entry.restore {
        let mut m = Vec::new();
        for (f, v) in [
            (1, r.pages_compared),
            (2, r.pages_skipped_cow),
            (3, r.forking_time as u64),
            (4, r.restore_time as u64),
            (5, r.pages_restored),
        ] {
            put_varint(&mut m, f << 3);
            put_varint(&mut m, v);
        }
        put_varint(&mut payload, (2 << 3) | 2);
        put_varint(&mut payload, m.len() as u64);
        payload.extend_from_slice(&m);
    }
    let mut out = Vec::with_capacity(12 + payload.len());
    out.extend_from_slice(&IMG_SERVICE_MAGIC.to_le_bytes());
    out.extend_from_slice(&STATS_MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

type DecodeResult<T> = Result<T, (usize, &'static str)>;

/// A protobuf field: number and value (varint value, or a sub-slice for length-delimited).
enum FieldValue<'a> {
    Varint(u64),
    Bytes(&'a [u8], usize),
    Other,
}

/// Iterates the fields of one message; `base` is the message's offset for error reporting.
fn for_each_field<'a>(
    buf: &'a [u8],
    base: usize,
    mut f: impl FnMut(u64, FieldValue<'a>, usize) -> DecodeResult<()>,
) -> DecodeResult<()> {
    let mut pos = 0;
    while pos < buf.len() {
        let at = base + pos;
        let key = varint(buf, &mut pos, base)?;
        let number = key >> 3;
        if number == 0 {
            return Err((at, "field number 0"));
        }
        let value = match key & 7 {
            0 => FieldValue::Varint(varint(buf, &mut pos, base)?),
            1 => {
                skip(buf, &mut pos, 8, base)?;
                FieldValue::Other
            }
            2 => {
                let len = varint(buf, &mut pos, base)?;
                let start = pos;
                let len = usize::try_from(len).map_err(|_| (base + start, "length too large"))?;
                skip(buf, &mut pos, len, base)?;
                FieldValue::Bytes(&buf[start..pos], base + start)
            }
            5 => {
                skip(buf, &mut pos, 4, base)?;
                FieldValue::Other
            }
            _ => return Err((at, "unsupported wire type")),
        };
        f(number, value, at)?;
    }
    Ok(())
}

fn skip(buf: &[u8], pos: &mut usize, n: usize, base: usize) -> DecodeResult<()> {
    match pos.checked_add(n) {
        Some(end) if end <= buf.len() => {
            *pos = end;
            Ok(())
        }
        _ => Err((base + *pos, "field runs past the end of the message")),
    }
}

fn varint(buf: &[u8], pos: &mut usize, base: usize) -> DecodeResult<u64> {
    let start = *pos;
    let mut v: u64 = 0;
    for shift in (0..70).step_by(7) {
        let Some(&b) = buf.get(*pos) else {
            return Err((base + start, "truncated varint"));
        };
        *pos += 1;
        if shift == 63 && b > 1 {
            return Err((base + start, "varint overflows 64 bits"));
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err((base + start, "varint longer than 10 bytes"))
}

fn want_varint(v: FieldValue<'_>, at: usize) -> DecodeResult<u64> {
    match v {
        FieldValue::Varint(n) => Ok(n),
        _ => Err((at, "wrong wire type for an integer field")),
    }
}

fn decode_entry(payload: &[u8]) -> DecodeResult<StatsEntry> {
    let mut entry = StatsEntry::default();
    for_each_field(payload, 0, |number, value, at| {
        match (number, value) {
            (1, FieldValue::Bytes(m, base)) => {
                let d = entry.dump.get_or_insert_with(DumpStats::default);
                for_each_field(m, base, |n, v, at| {
                    let x = match n {
                        1..=14 => want_varint(v, at)?,
                        _ => return Ok(()),
                    };
                    match n {
                        1 => d.freezing_time = x as u32,
                        2 => d.frozen_time = x as u32,
                        3 => d.memdump_time = x as u32,
                        4 => d.memwrite_time = x as u32,
                        5 => d.pages_scanned = x,
                        6 => d.pages_skipped_parent = x,
                        7 => d.pages_written = x,
                        8 => d.irmap_resolve = x as u32,
                        9 => d.pages_lazy = x,
                        10 => d.page_pipes = x,
                        11 => d.page_pipe_bufs = x,
                        12 => d.shpages_scanned = x,
                        13 => d.shpages_skipped_parent = x,
                        _ => d.shpages_written = x,
                    }
                    Ok(())
                })?;
            }
            (2, FieldValue::Bytes(m, base)) => {
                let r = entry.restore.get_or_insert_with(RestoreStats::default);
                for_each_field(m, base, |n, v, at| {
                    let x = match n {
                        1..=5 => want_varint(v, at)?,
                        _ => return Ok(()),
                    };
                    match n {
                        1 => r.pages_compared = x,
                        2 => r.pages_skipped_cow = x,
                        3 => r.forking_time = x as u32,
                        4 => r.restore_time = x as u32,
                        _ => r.pages_restored = x,
                    }
                    Ok(())
                })?;
            }
            (1 | 2, _) => return Err((at, "wrong wire type for an embedded message")),
            _ => {}
        }
        Ok(())
    })?;
    Ok(entry)
}

// ---------------------------------------------------------------------------------------------
// --print-stats

/// Podman's `CRIUCheckpointRestoreStatistics`: every field is omitted when zero, in Podman's
/// key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct CriuStatistics {
    #[serde(skip_serializing_if = "is_zero32")]
    freezing_time: u32,
    #[serde(skip_serializing_if = "is_zero32")]
    frozen_time: u32,
    #[serde(skip_serializing_if = "is_zero32")]
    memdump_time: u32,
    #[serde(skip_serializing_if = "is_zero32")]
    memwrite_time: u32,
    #[serde(skip_serializing_if = "is_zero64")]
    pages_scanned: u64,
    #[serde(skip_serializing_if = "is_zero64")]
    pages_skipped_parent: u64,
    #[serde(skip_serializing_if = "is_zero64")]
    pages_written: u64,
    #[serde(skip_serializing_if = "is_zero64")]
    pages_compared: u64,
    #[serde(skip_serializing_if = "is_zero64")]
    pages_skipped_cow: u64,
    #[serde(skip_serializing_if = "is_zero32")]
    forking_time: u32,
    #[serde(skip_serializing_if = "is_zero32")]
    restore_time: u32,
    #[serde(skip_serializing_if = "is_zero64")]
    pages_restored: u64,
}

fn is_zero32(v: &u32) -> bool {
    *v == 0
}
fn is_zero64(v: &u64) -> bool {
    *v == 0
}

impl From<&DumpStats> for CriuStatistics {
    fn from(d: &DumpStats) -> Self {
        CriuStatistics {
            freezing_time: d.freezing_time,
            frozen_time: d.frozen_time,
            memdump_time: d.memdump_time,
            memwrite_time: d.memwrite_time,
            pages_scanned: d.pages_scanned,
            pages_skipped_parent: d.pages_skipped_parent,
            pages_written: d.pages_written,
            ..Default::default()
        }
    }
}

impl From<&RestoreStats> for CriuStatistics {
    fn from(r: &RestoreStats) -> Self {
        CriuStatistics {
            pages_compared: r.pages_compared,
            pages_skipped_cow: r.pages_skipped_cow,
            forking_time: r.forking_time,
            restore_time: r.restore_time,
            pages_restored: r.pages_restored,
            ..Default::default()
        }
    }
}

/// One container of `podman container checkpoint --print-stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerCheckpointStats {
    /// Full container ID.
    #[serde(rename = "Id")]
    pub id: String,
    /// The name or ID the user typed.
    #[serde(rename = "RawInput")]
    pub raw_input: String,
    /// Time spent in `runc checkpoint`, microseconds.
    pub runtime_checkpoint_duration: i64,
    /// From `stats-dump`; `null` when unavailable.
    pub criu_statistics: Option<CriuStatistics>,
}

/// One container of `podman container restore --print-stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerRestoreStats {
    /// Full container ID.
    #[serde(rename = "Id")]
    pub id: String,
    /// The name or ID the user typed (empty for `--import`, as in Podman).
    #[serde(rename = "RawInput")]
    pub raw_input: String,
    /// Time spent in `runc restore`, microseconds.
    pub runtime_restore_duration: i64,
    /// From `stats-restore`; `null` when unavailable.
    pub criu_statistics: Option<CriuStatistics>,
}

/// The `--print-stats` document of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointStatsReport {
    /// Whole command, microseconds.
    pub podman_checkpoint_duration: i64,
    /// Per container.
    pub container_statistics: Vec<ContainerCheckpointStats>,
}

/// The `--print-stats` document of a restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreStatsReport {
    /// Whole command, microseconds.
    pub podman_restore_duration: i64,
    /// Per container.
    pub container_statistics: Vec<ContainerRestoreStats>,
}

/// A duration in whole microseconds, as Podman prints durations.
pub fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl ContainerCheckpointStats {
    /// Builds one entry from the runtime's duration and the `stats-dump` content, if any.
    pub fn new(id: &str, raw_input: &str, runtime: Duration, dump: Option<&DumpStats>) -> Self {
        ContainerCheckpointStats {
            id: id.to_string(),
            raw_input: raw_input.to_string(),
            runtime_checkpoint_duration: micros(runtime),
            criu_statistics: dump.map(CriuStatistics::from),
        }
    }
}

impl ContainerRestoreStats {
    /// Builds one entry from the runtime's duration and the `stats-restore` content, if any.
    pub fn new(
        id: &str,
        raw_input: &str,
        runtime: Duration,
        restore: Option<&RestoreStats>,
    ) -> Self {
        ContainerRestoreStats {
            id: id.to_string(),
            raw_input: raw_input.to_string(),
            runtime_restore_duration: micros(runtime),
            criu_statistics: restore.map(CriuStatistics::from),
        }
    }
}

/// Formats like Go's `json.MarshalIndent(v, "", "    ")`.
pub fn to_podman_json<T: Serialize>(v: &T) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    // Serializing these plain structs into a Vec cannot fail.
    if v.serialize(&mut ser).is_err() {
        return String::from("null");
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &[u8] = include_bytes!("../tests/fixtures/stats-dump");
    const RESTORE: &[u8] = include_bytes!("../tests/fixtures/stats-restore");

    #[test]
    fn real_stats_dump() {
        let d = read_dump_stats(DUMP).unwrap();
        assert_eq!(
            (
                d.freezing_time,
                d.frozen_time,
                d.memdump_time,
                d.memwrite_time
            ),
            (1456, 86408, 1033, 232)
        );
        assert_eq!(
            (d.pages_scanned, d.pages_skipped_parent, d.pages_written),
            (49, 0, 35)
        );
        assert_eq!((d.page_pipes, d.page_pipe_bufs, d.pages_lazy), (8, 8, 0));
        assert_eq!(parse_stats("x", DUMP).unwrap().restore, None);
    }

    #[test]
    fn real_stats_restore() {
        let r = read_restore_stats(RESTORE).unwrap();
        assert_eq!(
            r,
            RestoreStats {
                pages_compared: 9,
                pages_skipped_cow: 2,
                forking_time: 258,
                restore_time: 132504,
                pages_restored: 33
            }
        );
        let e = read_dump_stats(RESTORE).unwrap_err();
        assert_eq!(
            e.to_string(),
            "stats-dump: the statistics image has no dump entry; it was written by another CRIU operation"
        );
    }

    #[test]
    fn encode_decode_round_trip() {
        let entry = StatsEntry {
            dump: Some(DumpStats {
                freezing_time: u32::MAX,
                pages_scanned: u64::MAX,
                shpages_written: 300,
                ..Default::default()
            }),
            restore: Some(RestoreStats {
                pages_restored: 1 << 40,
                ..Default::default()
            }),
        };
        assert_eq!(parse_stats("f", &encode_stats(&entry)).unwrap(), entry);
        // CRIU's own bytes re-encode identically (same field order, all fields written).
        let real = parse_stats("stats-dump", DUMP).unwrap();
        assert_eq!(encode_stats(&real), DUMP);
    }

    #[test]
    fn garbage_and_truncation_name_the_file() {
        let e = parse_stats("stats-dump", &DUMP[..8]).unwrap_err();
        assert_eq!(
            e,
            StatsError::Truncated {
                file: "stats-dump".into(),
                need: 12,
                have: 8
            }
        );
        let e = parse_stats("stats-dump", &DUMP[..DUMP.len() - 1]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("stats-dump: truncated CRIU statistics image (46 bytes, 47 needed)"),
            "{e}"
        );
        let mut bad = DUMP.to_vec();
        bad[4] ^= 0xff;
        let e = parse_stats("stats-dump", &bad).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("stats-dump: not a CRIU statistics image (magic 0x570933f9"),
            "{e}"
        );
        // Inner message length pointing past the end.
        let mut bad = DUMP.to_vec();
        bad[13] = 0x7f;
        let e = parse_stats("stats-dump", &bad).unwrap_err();
        assert!(matches!(e, StatsError::Protobuf { offset: 2, .. }), "{e}");
        assert!(e.to_string().contains("runs past the end"));
        // Unterminated varint.
        let mut img = encode_stats(&StatsEntry::default());
        img.push(0x08);
        img.push(0xff);
        img[8] = 2;
        let e = parse_stats("stats-restore", &img).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "stats-restore: malformed statistics payload at byte 1: truncated varint"
            ),
            "{e}"
        );
        // Embedded message field with varint wire type.
        let img = [
            &encode_stats(&StatsEntry::default())[..8],
            &[2, 0, 0, 0, 0x08, 0x01],
        ]
        .concat();
        let e = parse_stats("f", &img).unwrap_err();
        assert!(
            e.to_string()
                .contains("wrong wire type for an embedded message"),
            "{e}"
        );
    }

    #[test]
    fn unknown_fields_are_skipped() {
        // field 3 (length-delimited, 2 bytes) and field 4 fixed32 before a restore entry.
        let mut p = vec![0x1a, 2, 0xaa, 0xbb, 0x25, 1, 2, 3, 4];
        p.extend_from_slice(&[0x12, 2, 0x08, 7]);
        let mut img = Vec::new();
        img.extend_from_slice(&IMG_SERVICE_MAGIC.to_le_bytes());
        img.extend_from_slice(&STATS_MAGIC.to_le_bytes());
        img.extend_from_slice(&(p.len() as u32).to_le_bytes());
        img.extend_from_slice(&p);
        assert_eq!(read_restore_stats(&img).unwrap().pages_compared, 7);
    }

    #[test]
    fn print_stats_matches_podman() {
        let d = read_dump_stats(DUMP).unwrap();
        let id = "f41583fc3f07f3ae2e1c5cd05db1aee2ebdcca4f01cc36fba16fad737adec2b6";
        let report = CheckpointStatsReport {
            podman_checkpoint_duration: micros(Duration::from_micros(438097)),
            container_statistics: vec![ContainerCheckpointStats::new(
                id,
                "stasisfx1",
                Duration::from_micros(154034),
                Some(&d),
            )],
        };
        // Captured from `podman container checkpoint --export ... --print-stats` (4.3.1).
        let podman = r#"{
    "podman_checkpoint_duration": 438097,
    "container_statistics": [
        {
            "Id": "f41583fc3f07f3ae2e1c5cd05db1aee2ebdcca4f01cc36fba16fad737adec2b6",
            "RawInput": "stasisfx1",
            "runtime_checkpoint_duration": 154034,
            "criu_statistics": {
                "freezing_time": 1456,
                "frozen_time": 86408,
                "memdump_time": 1033,
                "memwrite_time": 232,
                "pages_scanned": 49,
                "pages_written": 35
            }
        }
    ]
}"#;
        assert_eq!(to_podman_json(&report), podman);

        let r = read_restore_stats(RESTORE).unwrap();
        let report = RestoreStatsReport {
            podman_restore_duration: 299219,
            container_statistics: vec![ContainerRestoreStats::new(
                id,
                "",
                Duration::from_micros(205701),
                Some(&r),
            )],
        };
        let podman = r#"{
    "podman_restore_duration": 299219,
    "container_statistics": [
        {
            "Id": "f41583fc3f07f3ae2e1c5cd05db1aee2ebdcca4f01cc36fba16fad737adec2b6",
            "RawInput": "",
            "runtime_restore_duration": 205701,
            "criu_statistics": {
                "pages_compared": 9,
                "pages_skipped_cow": 2,
                "forking_time": 258,
                "restore_time": 132504,
                "pages_restored": 33
            }
        }
    ]
}"#;
        assert_eq!(to_podman_json(&report), podman);
        let none = ContainerRestoreStats::new(id, "", Duration::ZERO, None);
        assert!(to_podman_json(&none).contains("\"criu_statistics\": null"));
    }
}
