//! `Range: bytes=…` as RFC 9110 describes it, for one range.

use std::ops::Range;

/// What a `Range` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeSpec {
    /// One satisfiable byte range, clipped to the object.
    Bytes(Range<u64>),
    /// Syntactically valid but beyond the object: 416.
    Unsatisfiable,
    /// Not understood (another unit, several ranges, malformed): serve the whole object, as
    /// RFC 9110 allows.
    Ignore,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n` against an object of `size` bytes.
pub fn parse_range(header: &str, size: u64) -> RangeSpec {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let (a, b) = (a.trim(), b.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    match (a.is_empty(), b.is_empty()) {
        // Suffix: the last n bytes (an empty object has none to give).
        (true, false) => match parse(b) {
            Some(0) => RangeSpec::Unsatisfiable,
            Some(_) if size == 0 => RangeSpec::Unsatisfiable,
            Some(n) => RangeSpec::Bytes(size.saturating_sub(n)..size),
            None => RangeSpec::Ignore,
        },
        (false, true) => match parse(a) {
            Some(start) if start < size => RangeSpec::Bytes(start..size),
            Some(_) => RangeSpec::Unsatisfiable,
            None => RangeSpec::Ignore,
        },
        (false, false) => match (parse(a), parse(b)) {
            (Some(start), Some(last)) if start <= last => {
                if start >= size {
                    RangeSpec::Unsatisfiable
                } else {
                    RangeSpec::Bytes(start..last.saturating_add(1).min(size))
                }
            }
            _ => RangeSpec::Ignore,
        },
        (true, true) => RangeSpec::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_rfc_9110_says() {
        assert_eq!(parse_range("bytes=0-99", 1000), RangeSpec::Bytes(0..100));
        assert_eq!(parse_range("bytes=500-", 1000), RangeSpec::Bytes(500..1000));
        assert_eq!(parse_range("bytes=-100", 1000), RangeSpec::Bytes(900..1000));
        assert_eq!(parse_range("bytes=-5000", 1000), RangeSpec::Bytes(0..1000));
        assert_eq!(
            parse_range("bytes=900-5000", 1000),
            RangeSpec::Bytes(900..1000)
        );
        assert_eq!(parse_range("bytes=1000-", 1000), RangeSpec::Unsatisfiable);
        assert_eq!(
            parse_range("bytes=2000-3000", 1000),
            RangeSpec::Unsatisfiable
        );
        assert_eq!(parse_range("bytes=-0", 1000), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 1000), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), RangeSpec::Ignore);
        assert_eq!(parse_range("items=0-1", 1000), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=x-", 1000), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=0-", 0), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=-5", 0), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), RangeSpec::Unsatisfiable);
    }
}
