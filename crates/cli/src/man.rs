//! `berth man DIR`: man pages generated from the same clap definitions as
//! `--help` (one page per command and subcommand, `berth-task-submit.1`),
//! so they never drift from the flags.

use anyhow::Context;
use std::path::Path;

/// Write a page for `cmd` and each of its subcommands, depth first, into
/// `dir`; returns how many were written.
pub fn write_pages(cmd: clap::Command, dir: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = cmd;
    cmd.build();
    write(&cmd, "berth", dir)
}

fn write(cmd: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<usize> {
    let page = cmd
        .clone()
        .display_name(name.to_string())
        .bin_name(name.to_string());
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .with_context(|| format!("rendering the man page of {name}"))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    let mut n = 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        n += write(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn a_page_per_command_with_its_flags() {
        let dir = tempfile::tempdir().unwrap();
        let n = write_pages(crate::args::Cli::command(), dir.path()).unwrap();
        assert!(n > 10, "{n} pages");
        let top = std::fs::read_to_string(dir.path().join("berth.1")).unwrap();
        assert!(top.starts_with(".ie") || top.contains(".TH berth"), "{top}");
        let submit = std::fs::read_to_string(dir.path().join("berth-task-submit.1")).unwrap();
        assert!(submit.contains("stop\\-after\\-disconnect"), "{submit}");
        assert!(submit.contains("\\-\\-wait"), "{submit}");
        let master = std::fs::read_to_string(dir.path().join("berth-master.1")).unwrap();
        assert!(master.contains("heartbeat\\-ttl"), "{master}");
    }
}
