//! Human output, shared by the subcommands and the shell: the `workers`
//! block users of the predecessor know, task tables, task detail, the queue
//! with its reasons, and the `fix-resources` lines.
//!
//! Pure: every function takes proto messages and returns the text to print
//! (ending in a newline), so the formats are unit-tested here.

use berth_core::Resources;
use berth_core::units::{format_cores, format_gb_unit};
use berth_proto::{resources_or_zero, v1};
use std::fmt::Write as _;

/// The `workers` output: one block per worker, a blank line between.
pub fn workers(list: &[v1::Worker]) -> String {
    if list.is_empty() {
        return "No workers registered.\n".to_string();
    }
    let blocks: Vec<String> = list.iter().map(worker_block).collect();
    blocks.join("\n")
}

fn worker_block(w: &v1::Worker) -> String {
    let total = resources_or_zero(w.total);
    let allocated = resources_or_zero(w.allocated);
    let unknown = resources_or_zero(w.unknown);
    let available = total.saturating_sub(&allocated).saturating_sub(&unknown);
    let name = if w.name.is_empty() { &w.id } else { &w.name };
    let mut out = String::new();
    let mut flags = w.state.clone();
    if w.drained {
        flags.push_str(", drained");
    }
    if w.overcommitted {
        flags.push_str(", overcommitted");
    }
    let _ = writeln!(out, "Worker: {name} ({flags})");
    let _ = writeln!(
        out,
        "  CPU:     {} total, {} allocated, {} available",
        format_cores(total.cpu_millis),
        format_cores(allocated.cpu_millis),
        format_cores(available.cpu_millis)
    );
    let _ = writeln!(
        out,
        "  Memory:  {} total, {} allocated, {} available",
        format_gb_unit(total.memory_bytes),
        format_gb_unit(allocated.memory_bytes),
        format_gb_unit(available.memory_bytes)
    );
    let _ = writeln!(
        out,
        "  Storage: {} total, {} allocated, {} available",
        format_gb_unit(total.storage_bytes),
        format_gb_unit(allocated.storage_bytes),
        format_gb_unit(available.storage_bytes)
    );
    let _ = writeln!(
        out,
        "  GPU:     {} total, {} allocated, {} available",
        total.gpus, allocated.gpus, available.gpus
    );
    for g in &w.gpu_holders {
        let _ = writeln!(out, "  GPU {}: task {}", g.index, g.task_id);
    }
    if w.unknown_attempts > 0 {
        let _ = write!(
            out,
            "  Unknown: {} tasks (CPU {}, Memory {}",
            w.unknown_attempts,
            format_cores(unknown.cpu_millis),
            format_gb_unit(unknown.memory_bytes)
        );
        if unknown.gpus > 0 {
            let _ = write!(out, ", GPU {}", unknown.gpus);
        }
        let _ = writeln!(out, ")");
    }
    let _ = writeln!(out, "  Running Tasks: {}", w.running_attempts);
    if !w.labels.is_empty() {
        let _ = writeln!(out, "  Labels:  {}", labels_text(&w.labels));
    }
    out
}

/// `gpu=a100, zone=b`.
pub fn labels_text(labels: &[v1::Label]) -> String {
    labels
        .iter()
        .map(|l| format!("{}={}", l.key, l.value))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `task list` / `list-tasks` table.
/// The last line of a task list that showed only its first page.
pub fn more_tasks(remaining: u64, state: Option<berth_core::TaskState>) -> String {
    let state = state.map_or(String::new(), |s| format!(" --state {}", s.as_str()));
    let noun = if remaining == 1 { "task" } else { "tasks" };
    format!("… and {remaining} more {noun}; `berth task list{state} --all` lists every one\n")
}

pub fn task_table(tasks: &[v1::Task]) -> String {
    if tasks.is_empty() {
        return "No tasks.\n".to_string();
    }
    let rows = tasks
        .iter()
        .map(|t| {
            let spec = t.spec.clone().unwrap_or_default();
            let r = resources_or_zero(spec.resources);
            vec![
                t.id.to_string(),
                or_dash(&spec.name),
                t.state.clone(),
                spec.driver.clone(),
                format_cores(r.cpu_millis),
                format_gb_unit(r.memory_bytes),
                last_worker(t),
                exit_code(t.has_exit_code, t.exit_code),
            ]
        })
        .collect();
    table(
        &[
            "ID", "NAME", "STATE", "DRIVER", "CPU", "MEM", "WORKER", "EXIT",
        ],
        rows,
    )
}

/// The `queue` table: queued tasks and why each still waits.
pub fn queue(tasks: &[v1::Task]) -> String {
    if tasks.is_empty() {
        return "No queued tasks.\n".to_string();
    }
    let rows = tasks
        .iter()
        .map(|t| {
            let spec = t.spec.clone().unwrap_or_default();
            let r = resources_or_zero(spec.resources);
            vec![
                t.id.to_string(),
                or_dash(&spec.name),
                format_cores(r.cpu_millis),
                format_gb_unit(r.memory_bytes),
                r.gpus.to_string(),
                format_time(t.submitted_ms),
                or_dash(&t.wait_reason),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAME",
            "CPU",
            "MEM",
            "GPU",
            "SUBMITTED",
            "WAITING FOR",
        ],
        rows,
    )
}

/// `task show`: everything about one task, its attempts last.
pub fn task_detail(t: &v1::Task) -> String {
    let spec = t.spec.clone().unwrap_or_default();
    let r = resources_or_zero(spec.resources);
    let mut out = String::new();
    let what = if spec.image.is_empty() {
        spec.driver.clone()
    } else {
        format!("{} {}", spec.driver, spec.image)
    };
    let title = if spec.name.is_empty() {
        format!("Task {}", t.id)
    } else {
        format!("Task {}: {}", t.id, spec.name)
    };
    let _ = writeln!(out, "{title} ({what})");
    let mut field = |label: &str, value: String| {
        let _ = writeln!(out, "  {:<11}{value}", format!("{label}:"));
    };
    let state = if t.cancel_requested && !t.has_ended() {
        format!("{} (cancel requested)", t.state)
    } else {
        t.state.clone()
    };
    field("State", state);
    field("Exit code", exit_code(t.has_exit_code, t.exit_code));
    if !t.reason.is_empty() {
        field("Reason", t.reason.clone());
    }
    if !t.wait_reason.is_empty() {
        field("Waiting", t.wait_reason.clone());
    }
    field("Command", or_dash(&quote_command(&spec.command)));
    if !spec.env.is_empty() {
        let env: Vec<String> = spec
            .env
            .iter()
            .map(|e| quote_arg(&format!("{}={}", e.key, e.value)))
            .collect();
        field("Env", env.join(" "));
    }
    field("Resources", resources_line(&r));
    if spec.priority != 0 {
        field("Priority", spec.priority.to_string());
    }
    if !spec.constraints.is_empty() {
        field("Requires", labels_text(&spec.constraints));
    }
    if !spec.strategy.is_empty() {
        field("Strategy", spec.strategy.clone());
    }
    if !spec.pinned_worker.is_empty() {
        field("Worker", format!("{} only (dispatch)", spec.pinned_worker));
    }
    field("Submitted", format_time(t.submitted_ms));
    field("Ended", format_time(t.ended_ms));
    if t.attempts.is_empty() {
        let _ = writeln!(out, "  Attempts:  none");
        return out;
    }
    let _ = writeln!(out, "  Attempts:");
    let rows = t
        .attempts
        .iter()
        .map(|a| {
            vec![
                a.id.to_string(),
                if a.worker_name.is_empty() {
                    or_dash(&a.worker_id)
                } else {
                    a.worker_name.clone()
                },
                format_time(a.started_ms),
                format_time(a.ended_ms),
                outcome(a),
                or_dash(&a.reason),
            ]
        })
        .collect();
    let attempts = table(
        &["ATTEMPT", "WORKER", "STARTED", "ENDED", "OUTCOME", "REASON"],
        rows,
    );
    for line in attempts.lines() {
        let _ = writeln!(out, "    {line}");
    }
    out
}

/// `CPU 1.0, Memory 0.5 GB, Storage 0.0 GB, GPUs 0`.
pub fn resources_line(r: &Resources) -> String {
    format!(
        "CPU {}, Memory {}, Storage {}, GPUs {}",
        format_cores(r.cpu_millis),
        format_gb_unit(r.memory_bytes),
        format_gb_unit(r.storage_bytes),
        r.gpus
    )
}

/// What `cancel` reports.
pub fn cancelled(task: &v1::Task) -> String {
    if task.has_ended() {
        format!("Task {}: {}\n", task.id, task.state)
    } else {
        format!("Task {}: cancel requested (was {})\n", task.id, task.state)
    }
}

/// The `fix-resources` / `reconcile` report, after the
/// `🔄 Starting resource reconciliation...` line.
pub fn reconcile(resp: &v1::ReconcileResponse) -> String {
    let mut out = String::new();
    for fix in &resp.fixes {
        let _ = writeln!(
            out,
            "  {}",
            berth_proto::report::fix_line(fix, resp.dry_run)
        );
    }
    let _ = writeln!(out, "{}", berth_proto::report::summary(resp));
    out
}

/// The line printed before asking the master to reconcile.
pub const RECONCILE_START: &str = "🔄 Starting resource reconciliation...";

/// A task's outcome in one phrase: `succeeded`, `failed (exit 2)`, …
pub fn task_outcome(t: &v1::Task) -> String {
    let mut s = t.state.clone();
    if t.has_exit_code {
        let _ = write!(s, " (exit {})", t.exit_code);
    }
    if !t.reason.is_empty() {
        let _ = write!(s, ": {}", t.reason);
    }
    s
}

fn outcome(a: &v1::Attempt) -> String {
    if a.has_exit_code {
        format!("{} (exit {})", a.state, a.exit_code)
    } else {
        a.state.clone()
    }
}

fn last_worker(t: &v1::Task) -> String {
    match t.attempts.iter().max_by_key(|a| a.id) {
        Some(a) if !a.worker_name.is_empty() => a.worker_name.clone(),
        Some(a) => or_dash(&a.worker_id),
        None => "-".to_string(),
    }
}

fn exit_code(has: bool, code: i32) -> String {
    if has {
        code.to_string()
    } else {
        "-".to_string()
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows.iter()) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Milliseconds since the epoch as `2025-06-01 12:00:00 UTC`; `-` for 0.
pub fn format_time(ms: i64) -> String {
    if ms <= 0 {
        return "-".to_string();
    }
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_date(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
/// Counts in 400-year eras starting on March 1st, so the leap day is the
/// last day of each counted year.
fn civil_date(days: i64) -> (i64, u32, u32) {
    const DAYS_PER_ERA: i64 = 146_097;
    // 0000-03-01 is 719_468 days before the Unix epoch.
    let z = days + 719_468;
    let era = z.div_euclid(DAYS_PER_ERA);
    let day_of_era = z.rem_euclid(DAYS_PER_ERA);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March: lengths follow the 153-days-per-5-months cycle.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A command line as a shell would need it typed.
pub fn quote_command(args: &[String]) -> String {
    args.iter()
        .map(|a| quote_arg(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One argument, single-quoted when it holds anything a shell would split
/// or expand.
pub fn quote_arg(a: &str) -> String {
    let plain = !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// `berth task files ID` / `task-files`: a task's output files, sizes in
/// bytes.
pub fn task_files(task_id: u64, files: &[v1::OutputFile]) -> String {
    if files.is_empty() {
        return format!("Task {task_id} has no output files.\n");
    }
    let rows = files
        .iter()
        .map(|f| vec![f.path.clone(), f.size.to_string()])
        .collect();
    table(&["PATH", "SIZE"], rows)
}

/// The shell's `files`: every task that has output files.
pub fn outputs(list: &[v1::TaskOutputs]) -> String {
    if list.is_empty() {
        return "No task has output files.\n".to_string();
    }
    let rows = list
        .iter()
        .map(|t| {
            vec![
                t.task_id.to_string(),
                or_dash(&t.name),
                or_dash(&t.state),
                t.files.to_string(),
                format_bytes(t.bytes),
            ]
        })
        .collect();
    table(&["TASK", "NAME", "STATE", "FILES", "SIZE"], rows)
}

/// After `download`: each file written, then a summary (the shell's with
/// a check mark).
pub fn downloaded(
    task_id: u64,
    dir: &std::path::Path,
    files: &[v1::OutputFile],
    shell: bool,
) -> String {
    if files.is_empty() {
        return format!("Task {task_id} has no output files; nothing downloaded.\n");
    }
    let mut out = String::new();
    for f in files {
        let _ = writeln!(out, "{}", dir.join(&f.path).display());
    }
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    let _ = writeln!(
        out,
        "{}Downloaded {} file{} ({}) of task {task_id} to {}",
        if shell { "✓ " } else { "" },
        files.len(),
        if files.len() == 1 { "" } else { "s" },
        format_bytes(bytes),
        dir.display()
    );
    out
}

/// A size for people: `512 bytes`, `300.0 KiB`, `1.5 GiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} byte{}", if bytes == 1 { "" } else { "s" });
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod output_file_tests {
    use super::*;

    #[test]
    fn file_tables() {
        let files = vec![
            v1::OutputFile {
                path: "a.txt".into(),
                size: 5,
            },
            v1::OutputFile {
                path: "sub/data.bin".into(),
                size: 307_200,
            },
        ];
        assert_eq!(
            task_files(3, &files),
            "PATH          SIZE\na.txt         5\nsub/data.bin  307200\n"
        );
        assert_eq!(task_files(3, &[]), "Task 3 has no output files.\n");
        let list = vec![v1::TaskOutputs {
            task_id: 3,
            name: String::new(),
            state: "succeeded".into(),
            files: 2,
            bytes: 307_205,
        }];
        assert_eq!(
            outputs(&list),
            "TASK  NAME  STATE      FILES  SIZE\n3     -     succeeded  2      300.0 KiB\n"
        );
        let out = downloaded(3, std::path::Path::new("task-3"), &files, true);
        assert!(
            out.starts_with("task-3/a.txt\ntask-3/sub/data.bin\n"),
            "{out}"
        );
        assert!(
            out.ends_with("✓ Downloaded 2 files (300.0 KiB) of task 3 to task-3\n"),
            "{out}"
        );
        assert_eq!(format_bytes(1), "1 byte");
        assert_eq!(format_bytes(3 << 30), "3.0 GiB");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::units::GIB;

    fn res(
        cpu_millis: u64,
        memory_bytes: u64,
        storage_bytes: u64,
        gpus: u32,
    ) -> Option<v1::Resources> {
        Some(v1::Resources {
            cpu_millis,
            memory_bytes,
            storage_bytes,
            gpus,
        })
    }

    fn tessa() -> v1::Worker {
        v1::Worker {
            id: "w-1".into(),
            name: "Tessa".into(),
            state: "ready".into(),
            total: res(20_000, 8 * GIB, 100 * GIB, 0),
            allocated: res(5000, GIB / 2, 0, 0),
            running_attempts: 1,
            ..Default::default()
        }
    }

    #[test]
    fn workers_block_matches_the_known_format() {
        let expected = "\
Worker: Tessa (ready)
  CPU:     20.0 total, 5.0 allocated, 15.0 available
  Memory:  8.0 GB total, 0.5 GB allocated, 7.5 GB available
  Storage: 100.0 GB total, 0.0 GB allocated, 100.0 GB available
  GPU:     0 total, 0 allocated, 0 available
  Running Tasks: 1
";
        assert_eq!(workers(&[tessa()]), expected);
    }

    #[test]
    fn workers_list_which_task_holds_each_gpu() {
        let mut w = tessa();
        w.total = res(20_000, 8 * GIB, 100 * GIB, 2);
        w.allocated = res(5000, GIB / 2, 0, 2);
        w.gpu_holders = vec![
            v1::GpuHolder {
                index: 0,
                task_id: 12,
                attempt_id: 30,
            },
            v1::GpuHolder {
                index: 1,
                task_id: 14,
                attempt_id: 31,
            },
        ];
        let out = workers(&[w]);
        assert!(
            out.contains(
                "  GPU:     2 total, 2 allocated, 0 available\n  GPU 0: task 12\n  GPU 1: task 14\n  Running Tasks: 1\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn unknown_attempts_have_a_line_of_their_own() {
        let mut w = tessa();
        w.state = "down".into();
        w.allocated = res(0, 0, 0, 0);
        w.running_attempts = 0;
        w.unknown = res(5000, GIB / 2, 0, 0);
        w.unknown_attempts = 1;
        let out = workers(&[w]);
        assert!(
            out.contains(
                "  CPU:     20.0 total, 0.0 allocated, 15.0 available
  Memory:  8.0 GB total, 0.0 GB allocated, 7.5 GB available
"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "  Unknown: 1 tasks (CPU 5.0, Memory 0.5 GB)
  Running Tasks: 0
"
            ),
            "{out}"
        );
        assert!(!workers(&[tessa()]).contains("Unknown"));
    }

    #[test]
    fn workers_are_separated_by_a_blank_line() {
        let mut other = tessa();
        other.name = "Uma".into();
        let out = workers(&[tessa(), other]);
        assert!(
            out.contains("Running Tasks: 1\n\nWorker: Uma (ready)\n"),
            "{out}"
        );
        assert_eq!(workers(&[]), "No workers registered.\n");
    }

    #[test]
    fn available_saturates() {
        let mut w = tessa();
        w.allocated = res(30_000, 0, 0, 0);
        assert!(workers(&[w]).contains("20.0 total, 30.0 allocated, 0.0 available"));
    }

    #[test]
    fn reconcile_lines() {
        let resp = v1::ReconcileResponse {
            dry_run: false,
            fixes: vec![v1::WorkerFix {
                worker_id: "w-1".into(),
                worker_name: "Tessa".into(),
                before: res(5000, GIB / 2, 0, 0),
                after: res(0, 0, 0, 0),
                tasks: 0,
                kind: "records".into(),
            }],
            workers_checked: 1,
        };
        assert_eq!(
            reconcile(&resp),
            "  ✓ Fixed Tessa: CPU 5.0→0.0, Memory 0.5→0.0, Tasks: 0\n\
             ✓ Resource reconciliation complete: fixed 1 workers\n"
        );
        let dry = v1::ReconcileResponse {
            dry_run: true,
            ..resp
        };
        let out = reconcile(&dry);
        assert!(out.ends_with("(dry run) would fix 1 workers\n"), "{out}");
        assert!(!out.contains("✓ Fixed"), "{out}");
        let none = v1::ReconcileResponse::default();
        assert_eq!(
            reconcile(&none),
            "✓ Resource reconciliation complete: fixed 0 workers\n"
        );
    }

    fn task(id: u64, state: &str) -> v1::Task {
        v1::Task {
            id,
            spec: Some(v1::TaskSpec {
                name: "train".into(),
                driver: "docker".into(),
                image: "ubuntu:latest".into(),
                command: vec!["sh".into(), "-c".into(), "echo hi".into()],
                env: vec![],
                resources: res(5000, GIB / 2, 0, 0),
                ..Default::default()
            }),
            state: state.into(),
            submitted_ms: 1_700_000_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn task_table_columns() {
        let mut t = task(3, "succeeded");
        t.has_exit_code = true;
        t.attempts = vec![v1::Attempt {
            id: 9,
            worker_name: "Tessa".into(),
            ..Default::default()
        }];
        let out = task_table(&[t, task(12, "queued")]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "ID  NAME   STATE      DRIVER  CPU  MEM     WORKER  EXIT"
        );
        assert_eq!(
            lines[1],
            "3   train  succeeded  docker  5.0  0.5 GB  Tessa   0"
        );
        assert_eq!(
            lines[2],
            "12  train  queued     docker  5.0  0.5 GB  -       -"
        );
        assert_eq!(task_table(&[]), "No tasks.\n");
    }

    #[test]
    fn queue_shows_reasons() {
        let mut t = task(4, "queued");
        t.wait_reason = "no worker has 5.0 CPU free".into();
        let out = queue(&[t]);
        assert!(out.lines().next().unwrap().ends_with("WAITING FOR"));
        assert!(
            out.lines()
                .nth(1)
                .unwrap()
                .ends_with("no worker has 5.0 CPU free")
        );
        assert_eq!(queue(&[]), "No queued tasks.\n");
    }

    #[test]
    fn task_detail_lists_attempts() {
        let mut t = task(7, "failed");
        t.has_exit_code = true;
        t.exit_code = 2;
        t.reason = "exited with code 2".into();
        t.attempts = vec![v1::Attempt {
            id: 11,
            task_id: 7,
            worker_name: "Tessa".into(),
            state: "failed".into(),
            started_ms: 1_700_000_000_000,
            ended_ms: 1_700_000_001_000,
            has_exit_code: true,
            exit_code: 2,
            ..Default::default()
        }];
        let out = task_detail(&t);
        assert!(
            out.starts_with("Task 7: train (docker ubuntu:latest)\n"),
            "{out}"
        );
        assert!(out.contains("  State:     failed\n"), "{out}");
        assert!(out.contains("  Exit code: 2\n"), "{out}");
        assert!(out.contains("  Command:   sh -c 'echo hi'\n"), "{out}");
        assert!(out.contains("2023-11-14 22:13:20 UTC"), "{out}");
        assert!(out.contains("    11       Tessa   2023-11-14 22:13:20 UTC  2023-11-14 22:13:21 UTC  failed (exit 2)  -"), "{out}");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(format_time(0), "-");
        assert_eq!(format_time(1), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_time(1_709_251_199_000), "2024-02-29 23:59:59 UTC");
        assert_eq!(format_time(4_102_444_800_000), "2100-01-01 00:00:00 UTC");
    }

    #[test]
    fn arguments_are_quoted_when_needed() {
        assert_eq!(quote_arg("plain-arg"), "plain-arg");
        assert_eq!(quote_arg("two words"), "'two words'");
        assert_eq!(quote_arg("it's"), r"'it'\''s'");
        assert_eq!(quote_arg(""), "''");
    }
}

#[cfg(test)]
mod scheduling_tests {
    use super::*;
    use berth_core::units::GIB;

    fn worker(drained: bool, labels: &[(&str, &str)]) -> v1::Worker {
        v1::Worker {
            id: "w-1".into(),
            name: "Tessa".into(),
            state: "ready".into(),
            total: Some(v1::Resources {
                cpu_millis: 4000,
                memory_bytes: 8 * GIB,
                storage_bytes: 0,
                gpus: 0,
            }),
            drained,
            labels: labels
                .iter()
                .map(|(k, v)| v1::Label {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn drained_and_labels_are_added_not_changed() {
        let plain = workers(&[worker(false, &[])]);
        assert!(plain.starts_with("Worker: Tessa (ready)\n"), "{plain}");
        assert!(!plain.contains("Labels"), "{plain}");
        let out = workers(&[worker(true, &[("gpu", "a100"), ("zone", "b")])]);
        assert!(out.starts_with("Worker: Tessa (ready, drained)\n"), "{out}");
        assert!(
            out.ends_with("  Running Tasks: 0\n  Labels:  gpu=a100, zone=b\n"),
            "{out}"
        );
        // Every line of the plain block is still there, unchanged.
        for line in plain.lines().skip(1) {
            assert!(out.contains(line), "{line}");
        }
    }

    #[test]
    fn task_detail_shows_placement_choices_only_when_made() {
        let mut t = v1::Task {
            id: 3,
            state: "queued".into(),
            spec: Some(v1::TaskSpec {
                driver: "process".into(),
                command: vec!["true".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let out = task_detail(&t);
        for word in ["Priority", "Requires", "Strategy", "Worker:"] {
            assert!(!out.contains(word), "{out}");
        }
        let spec = t.spec.as_mut().unwrap();
        spec.priority = 5;
        spec.constraints = vec![v1::Label {
            key: "gpu".into(),
            value: "a100".into(),
        }];
        spec.strategy = "spread".into();
        spec.pinned_worker = "Tessa".into();
        let out = task_detail(&t);
        assert!(out.contains("  Priority:  5\n"), "{out}");
        assert!(out.contains("  Requires:  gpu=a100\n"), "{out}");
        assert!(out.contains("  Strategy:  spread\n"), "{out}");
        assert!(
            out.contains("  Worker:    Tessa only (dispatch)\n"),
            "{out}"
        );
    }
}
