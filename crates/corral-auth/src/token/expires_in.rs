//! The `JWT_EXPIRES_IN` grammar: a sequence of `<number><unit>` pairs.

use std::time::Duration;

use crate::AuthError;

/// Open WebUI's default token lifetime.
pub const DEFAULT_EXPIRES_IN: &str = "4w";

/// Parses a token lifetime such as `4w`, `1h30m`, `1.5h` or `500ms`.
///
/// The grammar is a sequence of `<number><unit>` pairs (optionally separated by whitespace), where the number is
/// a non-negative decimal (`1`, `1.5`) and the unit is one of `ms`, `s`, `m`, `h`, `d`, `w`. The pairs add up.
/// `-1` and `0` mean "no expiry" and give `Ok(None)`.
///
/// The reference finds pairs anywhere with `re.findall` and ignores junk between them; Corral rejects the whole
/// string instead, along with negative pairs (which would mint already-expired tokens), a zero total and totals
/// beyond 100 years.
pub fn parse_expires_in(value: &str) -> Result<Option<Duration>, AuthError> {
    let s = value.trim();
    if s == "-1" || s == "0" {
        return Ok(None);
    }
    let err = |reason| AuthError::InvalidExpiresIn {
        value: value.to_owned(),
        reason,
    };
    if s.is_empty() {
        return Err(err("empty; use -1 for no expiry"));
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    // Milliseconds keep every integer input exact.
    let mut total_ms = 0f64;
    while i < bytes.len() {
        if bytes[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let number = &s[start..i];
        if number.is_empty() {
            return Err(err("expected a number such as 4w or 1h30m"));
        }
        if !is_decimal(number) {
            return Err(err("malformed number"));
        }
        let n: f64 = number.parse().map_err(|_| err("malformed number"))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let ms_per_unit = match &s[unit_start..i] {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            "w" => 604_800_000.0,
            "" => return Err(err("a number without a unit; units are ms, s, m, h, d, w")),
            _ => return Err(err("unknown unit; units are ms, s, m, h, d, w")),
        };
        total_ms += n * ms_per_unit;
    }
    if !total_ms.is_finite() || total_ms > MAX_MS {
        return Err(err("longer than 100 years; use -1 for no expiry"));
    }
    // Rounded to whole nanoseconds; the bound above keeps the cast in range.
    let nanos = (total_ms * 1e6).round() as u64;
    if nanos == 0 {
        return Err(err("zero; use -1 for no expiry"));
    }
    Ok(Some(Duration::from_nanos(nanos)))
}

/// The longest accepted lifetime: 100 years, in milliseconds.
const MAX_MS: f64 = 100.0 * 365.25 * 86_400_000.0;

/// Digits with at most one interior dot: `1`, `1.5`, but not `.5`, `1.` or `1.2.3`.
fn is_decimal(s: &str) -> bool {
    match s.split_once('.') {
        None => !s.is_empty(),
        Some((int, frac)) => {
            !int.is_empty() && !frac.is_empty() && int.bytes().all(|b| b.is_ascii_digit()) && !frac.contains('.')
        }
    }
}
