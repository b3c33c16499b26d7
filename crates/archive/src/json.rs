//! Small JSON helpers shared by the modules: decoding with errors that name the file, Go-like
//! `null` tolerance, and Go's `time.Time` text format.

use serde::{Deserialize, Deserializer};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a JSON document could not be decoded, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonProblem {
    /// `true` for a syntax error or truncation, `false` for a well-formed document whose values
    /// have the wrong type or shape.
    pub syntax: bool,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// serde_json's message without its " at line L column C" suffix.
    pub message: String,
}

impl JsonProblem {
    pub(crate) fn from_serde(e: &serde_json::Error) -> Self {
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
        JsonProblem {
            syntax: matches!(
                e.classify(),
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof
            ),
            line: e.line(),
            column: e.column(),
            message,
        }
    }
}

impl std::fmt::Display for JsonProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.syntax {
            "invalid JSON"
        } else {
            "unexpected value"
        };
        write!(
            f,
            "{what} at line {} column {}: {}",
            self.line, self.column, self.message
        )
    }
}

/// Deserializes `null` as the type's default, as Go's decoder leaves a zero value for `null`.
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

pub(crate) fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// Formats a time the way Go's `time.Time` marshals to JSON (RFC 3339 with nanoseconds, trailing
/// zeros of the fraction trimmed, UTC `Z`), e.g. `2026-12-04T14:44:51.408595346Z`. Times before
/// 1970 are clamped to the epoch.
pub fn go_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, dd) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn go_time_format() {
        let t = UNIX_EPOCH + Duration::new(1_796_395_491, 408_595_346);
        assert_eq!(go_time(t), "2026-12-04T14:44:51.408595346Z");
        let t = UNIX_EPOCH + Duration::new(951_782_400, 500_000_000); // 2000-02-29
        assert_eq!(go_time(t), "2000-02-29T00:00:00.5Z");
        assert_eq!(go_time(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn problem_strips_position() {
        let e = serde_json::from_str::<serde_json::Value>("{\n  \"a\": ,\n}").unwrap_err();
        let p = JsonProblem::from_serde(&e);
        assert!(p.syntax);
        assert_eq!((p.line, p.column), (2, 8));
        assert_eq!(
            p.to_string(),
            "invalid JSON at line 2 column 8: expected value"
        );
    }
}
