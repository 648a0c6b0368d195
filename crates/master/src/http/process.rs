//! The master process's own figures for `/metrics`, with the names every
//! Prometheus client library uses (`process_resident_memory_bytes`,
//! `process_cpu_seconds_total`, `process_open_fds`,
//! `process_start_time_seconds`), read from `/proc/self` at each scrape.
//! Elsewhere than on Linux there is no `/proc`, and the family is absent.

/// One reading of the process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Process {
    pub resident_bytes: u64,
    pub cpu_seconds: f64,
    pub open_fds: u64,
    /// Since the Unix epoch.
    pub start_time_seconds: f64,
}

/// Read `/proc/self`; `None` where it cannot be read.
pub fn read() -> Option<Process> {
    #[cfg(target_os = "linux")]
    {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        // SAFETY: sysconf only reads a configuration value.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if ticks <= 0 || page <= 0 {
            return None;
        }
        parse(&stat, &boot, ticks as u64, page as u64, open_fds)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// From the text of `/proc/self/stat` and `/proc/stat`: CPU (utime +
/// stime), start time (boot time + starttime) and resident pages.
fn parse(stat: &str, boot: &str, ticks: u64, page: u64, open_fds: u64) -> Option<Process> {
    // The command name (field 2) is in parentheses and may hold spaces;
    // the fields after its closing parenthesis start with field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let (utime, stime) = (field(14)?, field(15)?);
    let (start_ticks, rss_pages) = (field(22)?, field(24)?);
    let btime: u64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(Process {
        resident_bytes: rss_pages * page,
        cpu_seconds: (utime + stime) as f64 / ticks as f64,
        open_fds,
        start_time_seconds: btime as f64 + start_ticks as f64 / ticks as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_command_name_holding_spaces_and_parentheses() {
        let stat = "4242 (berth (a b)) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 50 0 0 20 0 9 0 12345 500000000 3000 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0";
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        let p = parse(stat, boot, 100, 4096, 12).unwrap();
        assert_eq!(p.resident_bytes, 3000 * 4096);
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.open_fds, 12);
        assert_eq!(p.start_time_seconds, 1_700_000_123.45);
        assert_eq!(parse("garbage", boot, 100, 4096, 0), None);
        assert_eq!(parse(stat, "no boot time", 100, 4096, 0), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let p = read().expect("/proc/self is readable on Linux");
        assert!(p.resident_bytes > 0, "{p:?}");
        assert!(p.open_fds >= 3, "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            p.start_time_seconds > now - 86_400.0 && p.start_time_seconds <= now + 1.0,
            "{p:?}"
        );
    }
}
