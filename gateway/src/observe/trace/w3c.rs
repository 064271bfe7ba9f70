//! W3C Trace Context (https://www.w3.org/TR/trace-context/): reading a caller's `traceparent`
//! and `tracestate`, and writing ours. A header that breaks the rules is ignored (a new trace
//! starts, or the state is dropped), never an error for the request.

use std::fmt::Write;

/// A `traceparent` as a caller sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

/// The most list members a `tracestate` may have.
const MAX_STATE_MEMBERS: usize = 32;
/// The longest `tracestate` a participant must propagate (W3C §3.3.1.5).
const MAX_STATE_LEN: usize = 512;

/// Reads a `traceparent`. Version `00` must be exactly 55 characters; a later version may carry
/// more after a `-` (W3C §3.2.4), which is ignored. All-zero ids, upper-case hex and version
/// `ff` are invalid.
pub fn parse_traceparent(value: &[u8]) -> Option<Parent> {
    if value.len() < 55 {
        return None;
    }
    let version = hex_u8(&value[0..2])?;
    match (version, value.len()) {
        (0xff, _) => return None,
        (0, 55) => {}
        (0, _) => return None,
        (_, 55) => {}
        (_, _) if value[55] == b'-' => {}
        _ => return None,
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = hex_u128(&value[3..35])?;
    let span_id = hex_u64(&value[36..52])?;
    let flags = hex_u8(&value[53..55])?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// The `traceparent` for span `span_id` of trace `trace_id`.
pub fn format_traceparent(trace_id: u128, span_id: u64, sampled: bool) -> String {
    let mut text = String::with_capacity(55);
    let flags = if sampled { "01" } else { "00" };
    let _ = write!(text, "00-{trace_id:032x}-{span_id:016x}-{flags}");
    text
}

/// The `tracestate` to carry on: the caller's header lines joined, when every member is well
/// formed and the whole is within W3C's limits (32 members, 512 characters); `None` otherwise
/// (dropped, as the issue of a caller that breaks them is not ours to repair).
pub fn checked_tracestate<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Option<String> {
    let mut joined = String::new();
    let mut members = 0;
    for line in lines {
        let line = std::str::from_utf8(line).ok()?;
        for member in line.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            members += 1;
            if members > MAX_STATE_MEMBERS || !valid_member(member) {
                return None;
            }
            if !joined.is_empty() {
                joined.push(',');
            }
            joined.push_str(member);
            if joined.len() > MAX_STATE_LEN {
                return None;
            }
        }
    }
    (!joined.is_empty()).then_some(joined)
}

/// `key=value`, with W3C §3.3.1.3's key and value grammar.
fn valid_member(member: &str) -> bool {
    let Some((key, value)) = member.split_once('=') else {
        return false;
    };
    valid_key(key) && valid_value(value)
}

fn valid_key(key: &str) -> bool {
    let simple = |part: &str, max: usize| {
        !part.is_empty()
            && part.len() <= max
            && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && part.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'_' | b'-' | b'*' | b'/')
            })
    };
    match key.split_once('@') {
        // A multi-tenant key: `tenant@system`.
        Some((tenant, system)) => simple(tenant, 241) && simple(system, 14),
        None => simple(key, 256),
    }
}

fn valid_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && !value.ends_with(' ')
        && value
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn hex_u128(text: &[u8]) -> Option<u128> {
    text.iter()
        .try_fold(0u128, |acc, &b| Some(acc << 4 | u128::from(hex_digit(b)?)))
}

fn hex_u64(text: &[u8]) -> Option<u64> {
    text.iter()
        .try_fold(0u64, |acc, &b| Some(acc << 4 | u64::from(hex_digit(b)?)))
}

fn hex_u8(text: &[u8]) -> Option<u8> {
    text.iter()
        .try_fold(0u8, |acc, &b| Some(acc << 4 | hex_digit(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_reads_and_writes_back() {
        let parent = parse_traceparent(GOOD.as_bytes()).expect("valid");
        assert_eq!(parent.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(parent.span_id, 0x00f067aa0ba902b7);
        assert!(parent.sampled);
        assert_eq!(
            format_traceparent(parent.trace_id, parent.span_id, true),
            GOOD
        );
        let unsampled = GOOD.replace("-01", "-00");
        assert!(
            !parse_traceparent(unsampled.as_bytes())
                .expect("valid")
                .sampled
        );
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad}");
        }
        // A later version may add fields after a dash.
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future";
        assert!(parse_traceparent(future.as_bytes()).is_some());
        let oversized = format!("{GOOD}{}", "0".repeat(4096));
        assert_eq!(parse_traceparent(oversized.as_bytes()), None);
    }

    #[test]
    fn tracestate_is_kept_within_the_limits_and_dropped_past_them() {
        let lines = [
            "rojo=00f067aa0ba902b7",
            "congo=t61rcWkgMzE, tenant@vendor=x",
        ];
        assert_eq!(
            checked_tracestate(lines.iter().map(|l| l.as_bytes())).as_deref(),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,tenant@vendor=x")
        );
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        let many = many.join(",");
        assert_eq!(checked_tracestate([many.as_bytes()].into_iter()), None);
        let long = format!("k={}", "v".repeat(255));
        let long = [long.as_str(); 3].join(",").replace("k=", "a=");
        assert_eq!(checked_tracestate([long.as_bytes()].into_iter()), None);
        for bad in ["novalue", "Upper=x", "k=a,b=", "k=x=y", "k= "] {
            assert_eq!(
                checked_tracestate([bad.as_bytes()].into_iter()),
                None,
                "{bad}"
            );
        }
    }
}
