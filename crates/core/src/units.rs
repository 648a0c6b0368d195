//! Conversion between the familiar user units (float cores, "0.5G", GB) and
//! exact integers. This is the only place a float is ever read, and it is
//! converted once; nothing downstream sees a float.

use crate::validate::InputError;

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// Largest CPU request or worker size, in cores.
pub const MAX_CORES: u64 = 4096;
/// Largest memory request or worker size.
pub const MAX_MEMORY_BYTES: u64 = 64 << 40; // 64 TiB
/// Largest storage request or worker size.
pub const MAX_STORAGE_BYTES: u64 = 1 << 50; // 1 PiB
/// Largest GPU request or worker size, in devices.
pub const MAX_GPUS: u32 = 64;

fn parse_number(field: &'static str, text: &str) -> Result<f64, InputError> {
    let t = text.trim();
    let v: f64 = t
        .parse()
        .map_err(|_| InputError::new(field, format!("'{text}' is not a number")))?;
    if !v.is_finite() {
        return Err(InputError::new(
            field,
            format!("'{text}' is not a finite number"),
        ));
    }
    if v < 0.0 {
        return Err(InputError::new(
            field,
            format!("{text} is negative; it must be ≥ 0"),
        ));
    }
    Ok(v)
}

/// Parse CPU cores ("5", "0.5", "2.25") into millicores, rounding to the
/// nearest millicore. Bounded by [`MAX_CORES`].
pub fn parse_cores(field: &'static str, text: &str) -> Result<u64, InputError> {
    let v = parse_number(field, text)?;
    if v > MAX_CORES as f64 {
        return Err(InputError::new(
            field,
            format!("{text} cores exceeds the limit of {MAX_CORES} cores"),
        ));
    }
    Ok((v * 1000.0).round() as u64)
}

/// Parse a size. Accepts a number with an optional unit suffix
/// (`K`, `M`, `G`, `T`, optionally followed by `B` or `iB`, any case);
/// a bare number is in `bare_unit` bytes (GB at the shell, as the system
/// berth replaces did). Binary units throughout (1G = 2^30 bytes); the
/// result is rounded to whole MiB.
pub fn parse_size(
    field: &'static str,
    text: &str,
    bare_unit: u64,
    max_bytes: u64,
) -> Result<u64, InputError> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let stripped = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (num, unit) = match stripped.chars().last() {
        Some('k') => (&stripped[..stripped.len() - 1], 1u64 << 10),
        Some('m') => (&stripped[..stripped.len() - 1], MIB),
        Some('g') => (&stripped[..stripped.len() - 1], GIB),
        Some('t') => (&stripped[..stripped.len() - 1], 1u64 << 40),
        _ if stripped.len() != lower.len() => (stripped, 1),
        _ => (stripped, bare_unit),
    };
    if num.is_empty() {
        return Err(InputError::new(field, format!("'{text}' has no number")));
    }
    let v = parse_number(field, num)
        .map_err(|e| InputError::new(field, e.message.replace(num, text)))?;
    let bytes = v * unit as f64;
    if bytes > max_bytes as f64 {
        return Err(InputError::new(
            field,
            format!("{text} exceeds the limit of {}", format_gb_unit(max_bytes)),
        ));
    }
    let mib = (bytes / MIB as f64).round() as u64;
    Ok(mib * MIB)
}

/// Parse a GPU count: whole devices only.
pub fn parse_gpus(field: &'static str, text: &str) -> Result<u32, InputError> {
    let v = parse_number(field, text)?;
    if v.fract() != 0.0 {
        return Err(InputError::new(
            field,
            format!("{text} is fractional; GPUs are handed out as whole devices"),
        ));
    }
    if v > MAX_GPUS as f64 {
        return Err(InputError::new(
            field,
            format!("{text} exceeds the limit of {MAX_GPUS} GPUs"),
        ));
    }
    Ok(v as u32)
}

/// Milliseconds per duration unit, longest suffix first (so `ms` is read
/// before `m`).
const DURATION_UNITS: [(&str, u64); 5] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Longest duration the grammar reads (about 292 million years); bounds
/// that matter (a time limit, a heartbeat) are checked by the caller.
const MAX_DURATION_MS: f64 = (u64::MAX / 2) as f64;

/// Parse a duration into milliseconds: the one duration grammar of berth
/// (task time limits, `--stop-after-disconnect`, heartbeat and other
/// settings, the shell, REST).
///
/// A bare number is seconds (`90`, `1.5`); otherwise one or more
/// `NUMBER UNIT` parts, units `ms`, `s`, `m`, `h`, `d`, added up: `500ms`,
/// `30s`, `1.5m`, `2h`, `1d`, `1h30m`, `1m 30s`. Numbers may be fractional
/// and are never negative; the sum is rounded to the nearest millisecond.
pub fn parse_duration_ms(field: &'static str, text: &str) -> Result<u64, InputError> {
    let bad = || {
        InputError::new(
            field,
            format!("'{text}' is not a duration (e.g. 500ms, 90s, 30m, 2h, 1d, 1h30m)"),
        )
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = 0.0f64;
    let mut rest = t;
    let mut parts = 0;
    while !rest.is_empty() {
        let at = rest.find(['m', 's', 'h', 'd']);
        let (num, unit_ms, after) = match at {
            // A bare number: seconds, and only when it is the whole text.
            None if parts == 0 => (rest, 1_000, ""),
            None => return Err(bad()),
            Some(i) => {
                let tail = &rest[i..];
                let (unit, ms) = DURATION_UNITS
                    .iter()
                    .find(|(u, _)| tail.starts_with(u))
                    .copied()
                    .ok_or_else(bad)?;
                (&rest[..i], ms, tail[unit.len()..].trim_start())
            }
        };
        if num.trim().is_empty() {
            return Err(bad());
        }
        let v = parse_number(field, num).map_err(|_| bad())?;
        total += v * unit_ms as f64;
        parts += 1;
        rest = after;
    }
    let ms = total.round();
    if ms > MAX_DURATION_MS {
        return Err(InputError::new(field, format!("'{text}' is too long")));
    }
    Ok(ms as u64)
}

/// Milliseconds as the text [`parse_duration_ms`] reads back exactly:
/// `"90s"` for whole seconds, `"1500ms"` otherwise.
pub fn format_duration_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Parse a whole count (e.g. retries).
pub fn parse_count(field: &'static str, text: &str) -> Result<u32, InputError> {
    let t = text.trim();
    t.parse::<u32>()
        .map_err(|_| InputError::new(field, format!("'{text}' is not a whole number ≥ 0")))
}

/// Bytes as the text [`parse_size`] reads back exactly, for sizes in
/// whole MiB (what `parse_size` returns): `"8G"`, `"1536M"`, `"2048G"`.
pub fn format_size(bytes: u64) -> String {
    if bytes.is_multiple_of(GIB) {
        format!("{}G", bytes / GIB)
    } else {
        format!("{}M", bytes / MIB)
    }
}

/// Millicores as the cores a user types, exactly: `2`, `2.5`, `0.125`
/// (what [`parse_cores`] reads back).
pub fn format_cores_exact(millis: u64) -> String {
    let whole = millis / 1000;
    let frac = millis % 1000;
    if frac == 0 {
        return whole.to_string();
    }
    let f = format!("{frac:03}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

/// Millicores as cores with one decimal: `5000` → `"5.0"`.
pub fn format_cores(millis: u64) -> String {
    format!("{:.1}", millis as f64 / 1000.0)
}

/// Bytes as GB (2^30) with one decimal, no unit: `536870912` → `"0.5"`.
pub fn format_gb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / GIB as f64)
}

/// Bytes as GB with the unit: `"0.5 GB"`.
pub fn format_gb_unit(bytes: u64) -> String {
    format!("{} GB", format_gb(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_round_to_millicores() {
        assert_eq!(parse_cores("cpu", "5.0").unwrap(), 5000);
        assert_eq!(parse_cores("cpu", "0.0005").unwrap(), 1);
        assert_eq!(parse_cores("cpu", " 2 ").unwrap(), 2000);
    }

    #[test]
    fn cores_refuse_bad_values_naming_the_field() {
        for bad in ["-1", "NaN", "inf", "abc", "", "5000"] {
            let e = parse_cores("cpu", bad).unwrap_err();
            assert_eq!(e.field, "cpu", "{bad}");
        }
        assert!(
            parse_cores("cpu", "5000")
                .unwrap_err()
                .message
                .contains("4096")
        );
    }

    #[test]
    fn sizes_accept_suffixes_and_bare_gb() {
        assert_eq!(
            parse_size("mem", "0.5G", GIB, MAX_MEMORY_BYTES).unwrap(),
            GIB / 2
        );
        assert_eq!(
            parse_size("mem", "0.5", GIB, MAX_MEMORY_BYTES).unwrap(),
            GIB / 2
        );
        assert_eq!(
            parse_size("mem", "512MiB", GIB, MAX_MEMORY_BYTES).unwrap(),
            512 * MIB
        );
        assert_eq!(
            parse_size("mem", "8gb", GIB, MAX_MEMORY_BYTES).unwrap(),
            8 * GIB
        );
        assert_eq!(
            parse_size("mem", "1048576B", GIB, MAX_MEMORY_BYTES).unwrap(),
            MIB
        );
    }

    #[test]
    fn sizes_refuse_absurd_and_negative() {
        let e = parse_size("mem", "1e9G", GIB, MAX_MEMORY_BYTES).unwrap_err();
        assert!(e.message.contains("65536.0 GB"), "{}", e.message);
        assert!(parse_size("mem", "-1G", GIB, MAX_MEMORY_BYTES).is_err());
        assert!(parse_size("mem", "G", GIB, MAX_MEMORY_BYTES).is_err());
        assert!(parse_size("mem", "nanG", GIB, MAX_MEMORY_BYTES).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("timeout", "90s").unwrap(), 90_000);
        assert_eq!(parse_duration_ms("timeout", "1.5m").unwrap(), 90_000);
        assert_eq!(parse_duration_ms("timeout", "2").unwrap(), 2_000);
        assert_eq!(parse_duration_ms("timeout", "250ms").unwrap(), 250);
        assert_eq!(parse_duration_ms("timeout", "1d").unwrap(), 86_400_000);
        assert!(parse_duration_ms("timeout", "-1s").is_err());
        assert!(parse_duration_ms("timeout", "soon").is_err());
    }

    #[test]
    fn durations_accept_what_either_old_grammar_did_and_combinations() {
        for (text, ms) in [
            ("1s", 1_000),
            ("500ms", 500),
            ("1.5s", 1_500),
            ("2m", 120_000),
            ("3", 3_000),
            (" 2 h ", 7_200_000),
            ("1e3ms", 1_000),
            ("0.5d", 43_200_000),
            ("1h30m", 5_400_000),
            ("1m 30s", 90_000),
            ("1d2h3m4s5ms", 93_784_005),
            ("0s", 0),
        ] {
            assert_eq!(parse_duration_ms("d", text), Ok(ms), "{text}");
        }
        for bad in [
            "", "abc", "NaNs", "inf", "1x", "1h30", "h", "1h-2m", "1 2s", "5S",
        ] {
            let e = parse_duration_ms("stop_grace", bad).unwrap_err();
            assert_eq!(e.field, "stop_grace", "{bad}");
            assert!(e.message.contains("is not a duration"), "{bad}: {e}");
        }
        assert!(
            parse_duration_ms("d", "1e300d")
                .unwrap_err()
                .message
                .contains("too long")
        );
    }

    #[test]
    fn formats_read_back_exactly() {
        assert_eq!(format_duration_ms(90_000), "90s");
        assert_eq!(format_duration_ms(1_500), "1500ms");
        assert_eq!(format_duration_ms(0), "0s");
        assert_eq!(format_size(8 * GIB), "8G");
        assert_eq!(format_size(1536 * MIB), "1536M");
        assert_eq!(format_size(2 << 40), "2048G");
        assert_eq!(format_size(0), "0G");
        assert_eq!(format_cores_exact(2500), "2.5");
        assert_eq!(format_cores_exact(125), "0.125");
        assert_eq!(format_cores_exact(4000), "4");
        assert!(parse_count("retries", "-1").is_err());
        assert_eq!(parse_count("retries", "5").unwrap(), 5);
    }

    #[test]
    fn gpus_are_whole() {
        assert_eq!(parse_gpus("gpus", "2").unwrap(), 2);
        assert!(
            parse_gpus("gpus", "0.5")
                .unwrap_err()
                .message
                .contains("whole")
        );
    }

    #[test]
    fn formats_match_the_workers_block() {
        assert_eq!(format_cores(5000), "5.0");
        assert_eq!(format_cores(20_000), "20.0");
        assert_eq!(format_gb(GIB / 2), "0.5");
        assert_eq!(format_gb_unit(8 * GIB), "8.0 GB");
    }
}

#[cfg(test)]
mod round_trips {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn duration_format_then_parse_is_identity(ms in 0u64..(400 * 24 * 3_600_000)) {
            prop_assert_eq!(parse_duration_ms("d", &format_duration_ms(ms)), Ok(ms));
        }

        #[test]
        fn duration_parts_add_up(d in 0u64..400, h in 0u64..24, m in 0u64..60, s in 0u64..60, ms in 0u64..1000) {
            let text = format!("{d}d{h}h{m}m{s}s{ms}ms");
            let want = (((d * 24 + h) * 60 + m) * 60 + s) * 1000 + ms;
            prop_assert_eq!(parse_duration_ms("d", &text), Ok(want));
        }

        #[test]
        fn size_format_then_parse_is_identity(mib in 0u64..(MAX_STORAGE_BYTES / MIB)) {
            let bytes = mib * MIB;
            prop_assert_eq!(
                parse_size("storage", &format_size(bytes), GIB, MAX_STORAGE_BYTES),
                Ok(bytes)
            );
        }

        #[test]
        fn cores_format_then_parse_is_identity(millis in 0u64..=(MAX_CORES * 1000)) {
            prop_assert_eq!(parse_cores("cpu", &format_cores_exact(millis)), Ok(millis));
        }
    }
}
