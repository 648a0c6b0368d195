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

/// Parse a duration (`500ms`, `30s`, `1.5m`, `2h`, `1d`; a bare number is
/// seconds) into milliseconds.
pub fn parse_duration_ms(field: &'static str, text: &str) -> Result<u64, InputError> {
    let t = text.trim();
    let (num, unit_ms) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1e3)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60e3)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3_600e3)
    } else if let Some(n) = t.strip_suffix('d') {
        (n, 86_400e3)
    } else {
        (t, 1e3)
    };
    let v = parse_number(field, num).map_err(|_| {
        InputError::new(
            field,
            format!("'{text}' is not a duration (e.g. 90s, 30m, 2h)"),
        )
    })?;
    let ms = (v * unit_ms).round();
    if ms > u64::MAX as f64 / 2.0 {
        return Err(InputError::new(field, format!("'{text}' is too long")));
    }
    Ok(ms as u64)
}

/// Parse a whole count (e.g. retries).
pub fn parse_count(field: &'static str, text: &str) -> Result<u32, InputError> {
    let t = text.trim();
    t.parse::<u32>()
        .map_err(|_| InputError::new(field, format!("'{text}' is not a whole number ≥ 0")))
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
