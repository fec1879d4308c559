//! Human sizes on the command line: `64KiB`, `1MiB`, `10GiB`, `500MB`, or plain bytes.

/// Parses a size; binary (`KiB`) and decimal (`KB`) suffixes, case-insensitive.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{text}' (use e.g. 64KiB, 1MiB, 10GiB)"
            ))
        }
    };
    if num.contains('.') {
        let v: f64 = num
            .parse()
            .map_err(|_| format!("'{text}' is not a size (use e.g. 64KiB, 1MiB, 10GiB)"))?;
        let bytes = v * mult as f64;
        if !(0.0..1.8e19).contains(&bytes) {
            return Err(format!("size '{text}' is out of range"));
        }
        return Ok(bytes as u64);
    }
    let v: u64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a size (use e.g. 64KiB, 1MiB, 10GiB)"))?;
    v.checked_mul(mult)
        .ok_or_else(|| format!("size '{text}' is out of range"))
}

/// Parses a duration: `500ms`, `1s`, `2m`, `1h`, `30d`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (use e.g. 500ms, 1s, 2m)"))?;
    let d = match unit {
        "ms" => std::time::Duration::from_millis(n),
        "s" | "" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_secs(n * 60),
        "h" => std::time::Duration::from_secs(n.saturating_mul(3600)),
        "d" => std::time::Duration::from_secs(n.saturating_mul(86_400)),
        other => {
            return Err(format!(
                "unknown duration unit '{other}' in '{text}' (use ms, s, m, h, d)"
            ))
        }
    };
    if d.is_zero() {
        return Err(format!("duration '{text}' must be more than zero"));
    }
    Ok(d)
}

/// The shard size for a file of `size` bytes split `data_shards` ways: one stripe's share of the
/// file rounded up to a power of two, between 64 KiB and 1 MiB, so a small file does not take a
/// whole 1 MiB shard per slot.
pub fn auto_shard_size(size: u64, data_shards: u16) -> u64 {
    let share = size.div_ceil(u64::from(data_shards.max(1)));
    share
        .checked_next_power_of_two()
        .unwrap_or(u64::MAX)
        .clamp(64 * 1024, 1024 * 1024)
}

/// Formats bytes for people: `1.5 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_file_gets_a_small_shard() {
        // A 1 MiB video at 4+2 takes 6 x 256 KiB of provider disk, not 6 x 1 MiB.
        assert_eq!(auto_shard_size(1 << 20, 4), 256 << 10);
        assert_eq!(auto_shard_size(1, 4), 64 << 10);
        assert_eq!(auto_shard_size(0, 4), 64 << 10);
        assert_eq!(auto_shard_size(1 << 30, 4), 1 << 20);
        assert_eq!(auto_shard_size(u64::MAX, 1), 1 << 20);
    }

    #[test]
    fn deal_lengths_parse_in_days() {
        assert_eq!(
            parse_duration("30d"),
            Ok(std::time::Duration::from_secs(30 * 86_400))
        );
        assert!(parse_duration("3w").is_err());
    }

    #[test]
    fn sizes_parse_as_documented() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert_eq!(format_size(1536), "1.5 KiB");
    }
}
