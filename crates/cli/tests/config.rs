//! Configuration, end to end through the real binary: every key
//! documented in `docs/CONFIGURATION.md` is set through the config file,
//! the environment and its flag in turn, and must show up in
//! `--print-config` with that value and that origin; the layering order;
//! refusals that name the key; the systemd units' flags.
//!
//! Nothing here starts a cluster: `--print-config` exits before anything
//! is bound or written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

/// Run `berth` with exactly `env` (nothing inherited but PATH).
fn berth(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BERTH);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run berth")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure; stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// A documented key: one row of the table under "## Every key".
#[derive(Debug, Clone)]
struct DocKey {
    section: String,
    name: String,
    env: String,
    flag: String,
    default: String,
}

fn documented_keys() -> Vec<DocKey> {
    let doc = std::fs::read_to_string(repo_file("docs/CONFIGURATION.md")).unwrap();
    let table = doc
        .split("## Every key")
        .nth(1)
        .expect("docs/CONFIGURATION.md has an '## Every key' section");
    let strip = |c: &str| c.trim().trim_matches('`').to_string();
    let keys: Vec<DocKey> = table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').collect();
            let id = strip(cells[0]);
            let (section, name) = id.split_once('.').expect("section.key");
            DocKey {
                section: section.into(),
                name: name.into(),
                env: strip(cells[1]),
                flag: strip(cells[2]),
                default: strip(cells[3]),
            }
        })
        .collect();
    assert!(keys.len() >= 19, "found only {} keys", keys.len());
    keys
}

/// Test values for one key: (TOML literal in the file, as printed), (env
/// value, as printed), (flag value or none for a switch, as printed).
struct Values {
    file: (&'static str, &'static str),
    env: (&'static str, &'static str),
    flag: (Option<&'static str>, &'static str),
}

fn values() -> BTreeMap<&'static str, Values> {
    let v = |file: (&'static str, &'static str),
             env: (&'static str, &'static str),
             flag: (Option<&'static str>, &'static str)| Values { file, env, flag };
    BTreeMap::from([
        (
            "master.listen",
            v(
                ("\"127.0.0.1:7801\"", "\"127.0.0.1:7801\""),
                ("127.0.0.1:7802", "\"127.0.0.1:7802\""),
                (Some("127.0.0.1:7803"), "\"127.0.0.1:7803\""),
            ),
        ),
        (
            "master.http",
            v(
                ("\"off\"", "\"off\""),
                ("127.0.0.1:7812", "\"127.0.0.1:7812\""),
                (Some("127.0.0.1:7813"), "\"127.0.0.1:7813\""),
            ),
        ),
        (
            "master.data_dir",
            v(
                ("\"/tmp/berth-cfg-a\"", "\"/tmp/berth-cfg-a\""),
                ("/tmp/berth-cfg-b", "\"/tmp/berth-cfg-b\""),
                (Some("/tmp/berth-cfg-c"), "\"/tmp/berth-cfg-c\""),
            ),
        ),
        (
            "master.store",
            v(
                (
                    "\"postgres://berth:pw-file@db1:5432/b\"",
                    "\"postgres://berth:***@db1:5432/b\"",
                ),
                (
                    "postgres://berth:pw-env@db2/b?sslmode=disable",
                    "\"postgres://berth:***@db2/b?sslmode=disable\"",
                ),
                (
                    Some("postgresql://berth:pw-flag@db3/b"),
                    "\"postgresql://berth:***@db3/b\"",
                ),
            ),
        ),
        (
            "master.heartbeat_interval",
            v(
                ("\"2s\"", "\"2s\""),
                ("3s", "\"3s\""),
                (Some("500ms"), "\"500ms\""),
            ),
        ),
        (
            "master.heartbeat_ttl",
            v(
                ("\"7s\"", "\"7s\""),
                ("8s", "\"8s\""),
                (Some("9s"), "\"9s\""),
            ),
        ),
        (
            "master.reconcile_interval",
            v(
                ("30", "\"30s\""),
                ("45s", "\"45s\""),
                (Some("2m"), "\"120s\""),
            ),
        ),
        (
            "master.strategy",
            v(
                ("\"spread\"", "\"spread\""),
                ("spread", "\"spread\""),
                (Some("spread"), "\"spread\""),
            ),
        ),
        (
            "master.starvation_wait",
            v(
                ("30", "\"30s\""),
                ("45s", "\"45s\""),
                (Some("2m"), "\"120s\""),
            ),
        ),
        (
            "master.require_registration",
            v(("true", "true"), ("yes", "true"), (None, "true")),
        ),
        (
            "master.log_format",
            v(
                ("\"json\"", "\"json\""),
                ("json", "\"json\""),
                (Some("json"), "\"json\""),
            ),
        ),
        (
            "worker.labels",
            v(
                ("[\"gpu=a100\", \"zone=b\"]", "[\"gpu=a100\", \"zone=b\"]"),
                ("gpu=h100,rack=7", "[\"gpu=h100\", \"rack=7\"]"),
                (Some("ssd=yes"), "[\"ssd=yes\"]"),
            ),
        ),
        (
            "worker.name",
            v(
                ("\"alpha\"", "\"alpha\""),
                ("beta", "\"beta\""),
                (Some("gamma"), "\"gamma\""),
            ),
        ),
        (
            "worker.data_dir",
            v(
                ("\"/tmp/berth-w-a\"", "\"/tmp/berth-w-a\""),
                ("/tmp/berth-w-b", "\"/tmp/berth-w-b\""),
                (Some("/tmp/berth-w-c"), "\"/tmp/berth-w-c\""),
            ),
        ),
        (
            "worker.cpus",
            v(("2.5", "\"2.5\""), ("3", "\"3\""), (Some("0.5"), "\"0.5\"")),
        ),
        (
            "worker.memory",
            v(
                ("8", "\"8G\""),
                ("512M", "\"512M\""),
                (Some("1.5G"), "\"1536M\""),
            ),
        ),
        (
            "worker.storage",
            v(
                ("\"100G\"", "\"100G\""),
                ("1T", "\"1024G\""),
                (Some("50"), "\"50G\""),
            ),
        ),
        ("worker.gpus", v(("1", "1"), ("2", "2"), (Some("3"), "3"))),
        (
            "worker.stop_grace",
            v(
                ("\"20s\"", "\"20s\""),
                ("30s", "\"30s\""),
                (Some("1500ms"), "\"1500ms\""),
            ),
        ),
        (
            "worker.max_output",
            v(
                ("\"2G\"", "\"2G\""),
                ("512M", "\"512M\""),
                (Some("3"), "\"3G\""),
            ),
        ),
        (
            "worker.drain_on_exit",
            v(("true", "true"), ("yes", "true"), (None, "true")),
        ),
        (
            "worker.log_format",
            v(
                ("\"json\"", "\"json\""),
                ("json", "\"json\""),
                (Some("json"), "\"json\""),
            ),
        ),
        (
            "dev.data_dir",
            v(
                ("\"/tmp/berth-d-a\"", "\"/tmp/berth-d-a\""),
                ("/tmp/berth-d-b", "\"/tmp/berth-d-b\""),
                (Some("/tmp/berth-d-c"), "\"/tmp/berth-d-c\""),
            ),
        ),
        (
            "dev.listen",
            v(
                ("\"127.0.0.1:7901\"", "\"127.0.0.1:7901\""),
                ("127.0.0.1:7902", "\"127.0.0.1:7902\""),
                (Some("127.0.0.1:7903"), "\"127.0.0.1:7903\""),
            ),
        ),
        (
            "dev.http",
            v(
                ("false", "\"off\""),
                ("127.0.0.1:7912", "\"127.0.0.1:7912\""),
                (Some("off"), "\"off\""),
            ),
        ),
        (
            "dev.log_format",
            v(
                ("\"json\"", "\"json\""),
                ("json", "\"json\""),
                (Some("json"), "\"json\""),
            ),
        ),
        (
            "client.master",
            v(
                ("\"http://m1:7700\"", "\"http://m1:7700\""),
                ("m2:7700", "\"http://m2:7700\""),
                (Some("http://m3:1"), "\"http://m3:1\""),
            ),
        ),
        (
            "client.token",
            v(
                ("\"s3cret-file\"", "hidden"),
                ("s3cret-env", "hidden"),
                (Some("s3cret-flag"), "hidden"),
            ),
        ),
    ])
}

/// The command whose `--print-config` shows a section's keys.
fn role(section: &str) -> &'static str {
    match section {
        "master" => "master",
        "worker" | "client" => "worker",
        "dev" => "dev",
        other => panic!("unknown section {other}"),
    }
}

/// `--print-config` output as section → key → (value, origin). Commented
/// `# key: …` lines are kept with the value `# …`.
fn printed(text: &str) -> BTreeMap<String, BTreeMap<String, (String, String)>> {
    let mut out: BTreeMap<String, BTreeMap<String, (String, String)>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        if section.is_empty() || line.trim().is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix("# ") {
            // `# token: set, hidden  # BERTH_TOKEN`, `# cpus: detected at start`
            let (key, rest) = c.split_once(':').unwrap();
            let (value, origin) = rest.split_once("  # ").unwrap_or((rest, ""));
            out.entry(section.clone()).or_default().insert(
                key.trim().into(),
                (format!("# {}", value.trim()), origin.trim().into()),
            );
            continue;
        }
        let (assignment, origin) = line.split_once(" # ").expect("value # origin");
        let (key, value) = assignment.split_once(" = ").expect("key = value");
        out.entry(section.clone()).or_default().insert(
            key.trim().into(),
            (value.trim().into(), origin.trim().into()),
        );
    }
    out
}

fn print_config(
    args: &[&str],
    env: &[(&str, &str)],
) -> BTreeMap<String, BTreeMap<String, (String, String)>> {
    printed(&ok(&berth(args, env)))
}

fn lookup<'a>(
    p: &'a BTreeMap<String, BTreeMap<String, (String, String)>>,
    k: &DocKey,
) -> &'a (String, String) {
    p.get(&k.section)
        .and_then(|s| s.get(&k.name))
        .unwrap_or_else(|| {
            panic!(
                "{}.{} missing from --print-config: {p:?}",
                k.section, k.name
            )
        })
}

fn expect_value(got: &(String, String), printed_value: &str, origin: &str, k: &DocKey) {
    if printed_value == "hidden" {
        assert_eq!(got.0, "# set, hidden", "{}.{}", k.section, k.name);
    } else {
        assert_eq!(got.0, printed_value, "{}.{}", k.section, k.name);
    }
    assert_eq!(got.1, origin, "{}.{} origin", k.section, k.name);
}

#[test]
fn every_documented_key_has_a_test_value() {
    let documented: Vec<String> = documented_keys()
        .iter()
        .map(|k| format!("{}.{}", k.section, k.name))
        .collect();
    let tested: Vec<String> = values().keys().map(|k| k.to_string()).collect();
    let mut d = documented.clone();
    d.sort();
    assert_eq!(
        d, tested,
        "docs/CONFIGURATION.md keys vs the values this test sets"
    );
}

#[test]
fn every_documented_key_is_read_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let vals = values();
    for k in documented_keys() {
        let v = &vals[format!("{}.{}", k.section, k.name).as_str()];
        let file = dir.path().join(format!("{}-{}.toml", k.section, k.name));
        std::fs::write(
            &file,
            format!("[{}]\n{} = {}\n", k.section, k.name, v.file.0),
        )
        .unwrap();
        let p = print_config(
            &[
                role(&k.section),
                "--config",
                file.to_str().unwrap(),
                "--print-config",
            ],
            &[],
        );
        expect_value(lookup(&p, &k), v.file.1, "config file", &k);
    }
}

#[test]
fn every_documented_key_is_read_from_its_environment_variable() {
    let vals = values();
    for k in documented_keys() {
        let v = &vals[format!("{}.{}", k.section, k.name).as_str()];
        let p = print_config(&[role(&k.section), "--print-config"], &[(&k.env, v.env.0)]);
        expect_value(lookup(&p, &k), v.env.1, &k.env, &k);
    }
}

#[test]
fn every_documented_key_is_read_from_its_flag() {
    let vals = values();
    for k in documented_keys() {
        let v = &vals[format!("{}.{}", k.section, k.name).as_str()];
        let mut args = vec![role(&k.section), k.flag.as_str()];
        if let Some(value) = v.flag.0 {
            args.push(value);
        }
        args.push("--print-config");
        let out = berth(&args, &[]);
        let text = ok(&out);
        assert!(
            !text.contains("s3cret"),
            "the token is never printed: {text}"
        );
        expect_value(lookup(&printed(&text), &k), v.flag.1, &k.flag, &k);
    }
}

#[test]
fn documented_defaults_are_the_defaults() {
    for k in documented_keys() {
        let p = print_config(&[role(&k.section), "--print-config"], &[]);
        let (value, origin) = lookup(&p, &k);
        match k.default.as_str() {
            "detected" => assert_eq!(value, "# detected at start", "{}", k.name),
            "none" => assert_eq!(value, "# not set", "{}", k.name),
            "host name" => assert_eq!(origin, "default", "{}", k.name),
            d if k.name == "data_dir" => {
                let name = Path::new(d).file_name().unwrap().to_str().unwrap();
                assert!(value.ends_with(&format!("/{name}\"")), "{value} for {d}");
                assert!(value.starts_with("\"/"), "made absolute: {value}");
            }
            d => assert!(
                value == &format!("\"{d}\"") || value == d,
                "{}.{}: {value} is not the documented {d}",
                k.section,
                k.name
            ),
        }
        if !value.starts_with('#') {
            assert_eq!(origin, "default", "{}.{}", k.section, k.name);
        }
    }
}

#[test]
fn flags_beat_environment_beat_file_beat_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.toml");
    std::fs::write(&file, "[master]\nheartbeat_ttl = \"7s\"\n").unwrap();
    let f = file.to_str().unwrap();
    let ttl = |args: &[&str], env: &[(&str, &str)]| {
        let p = print_config(args, env);
        p["master"]["heartbeat_ttl"].clone()
    };
    let env = [("BERTH_MASTER_HEARTBEAT_TTL", "8s")];
    assert_eq!(
        ttl(
            &[
                "master",
                "--config",
                f,
                "--heartbeat-ttl",
                "9s",
                "--print-config"
            ],
            &env
        ),
        ("\"9s\"".into(), "--heartbeat-ttl".into())
    );
    assert_eq!(
        ttl(&["master", "--config", f, "--print-config"], &env),
        ("\"8s\"".into(), "BERTH_MASTER_HEARTBEAT_TTL".into())
    );
    assert_eq!(
        ttl(&["master", "--config", f, "--print-config"], &[]),
        ("\"7s\"".into(), "config file".into())
    );
    assert_eq!(
        ttl(&["master", "--print-config"], &[]),
        ("\"5s\"".into(), "default".into())
    );
    // BERTH_CONFIG names the file when --config does not; --config wins.
    assert_eq!(
        ttl(&["master", "--print-config"], &[("BERTH_CONFIG", f)]),
        ("\"7s\"".into(), "config file".into())
    );
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "[master]\nheartbeat_ttl = \"6s\"\n").unwrap();
    assert_eq!(
        ttl(
            &[
                "master",
                "--config",
                other.to_str().unwrap(),
                "--print-config"
            ],
            &[("BERTH_CONFIG", f)]
        ),
        ("\"6s\"".into(), "config file".into())
    );
}

#[test]
fn unknown_keys_and_sections_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.toml");
    std::fs::write(&file, "[master]\nlistn = \"0.0.0.0:7700\"\n").unwrap();
    let out = berth(
        &[
            "master",
            "--config",
            file.to_str().unwrap(),
            "--print-config",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = failed(&out);
    assert!(err.contains("unknown key 'listn' in [master]"), "{err}");
    assert!(err.contains("did you mean 'listen'?"), "{err}");

    std::fs::write(&file, "[wroker]\nname = \"x\"\n").unwrap();
    let err = failed(&berth(
        &[
            "worker",
            "--config",
            file.to_str().unwrap(),
            "--print-config",
        ],
        &[],
    ));
    assert!(err.contains("unknown section [wroker]"), "{err}");

    // A key of another section is unknown where it is put.
    std::fs::write(&file, "[client]\nname = \"x\"\n").unwrap();
    let err = failed(&berth(
        &["workers", "--config", file.to_str().unwrap()],
        &[],
    ));
    assert!(err.contains("unknown key 'name' in [client]"), "{err}");

    let err = failed(&berth(
        &[
            "master",
            "--config",
            "/nonexistent/berth.toml",
            "--print-config",
        ],
        &[],
    ));
    assert!(
        err.contains("cannot read the config file /nonexistent/berth.toml"),
        "{err}"
    );
}

#[test]
fn invalid_values_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.toml");
    let f = file.to_str().unwrap();
    for (text, role, expected) in [
        (
            "[master]\nheartbeat_ttl = \"soon\"\n",
            "master",
            "heartbeat_ttl: 'soon' is not a duration",
        ),
        (
            "[master]\nheartbeat_ttl = \"1s\"\nheartbeat_interval = \"2s\"\n",
            "master",
            "heartbeat_ttl: must be longer than heartbeat_interval (1s ≤ 2s)",
        ),
        (
            "[master]\nlisten = 7700\n",
            "master",
            "listen: expected an address string",
        ),
        (
            "[worker]\ngpus = 1.5\n",
            "worker",
            "gpus: 1.5 is fractional",
        ),
        ("[worker]\nmemory = \"lots\"\n", "worker", "memory: "),
        (
            "[worker]\nname = \"\"\n",
            "worker",
            "name: must not be empty",
        ),
        (
            "[worker]\ndrain_on_exit = \"perhaps\"\n",
            "worker",
            "drain_on_exit: 'perhaps' is not true or false",
        ),
        (
            "[dev]\nhttp = 80\n",
            "dev",
            "http: expected an address string",
        ),
        (
            "[client]\nmaster = \"\"\n",
            "worker",
            "master: must not be empty",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = berth(&[role, "--config", f, "--print-config"], &[]);
        let err = failed(&out);
        assert!(err.contains(&format!("error: {expected}")), "{text}: {err}");
        assert!(
            expected.contains("must be longer") || err.contains(&format!("of {f})")),
            "names the file: {err}"
        );
    }
    let err = failed(&berth(
        &["worker", "--print-config"],
        &[("BERTH_WORKER_STOP_GRACE", "forever")],
    ));
    assert!(
        err.contains("error: stop_grace: 'forever' is not a duration")
            && err.contains("(from BERTH_WORKER_STOP_GRACE)"),
        "{err}"
    );
    let err = failed(&berth(
        &["master", "--heartbeat-ttl", "500ms", "--print-config"],
        &[],
    ));
    assert!(
        err.contains("heartbeat_ttl: must be longer than heartbeat_interval (500ms ≤ 1s)"),
        "{err}"
    );
    // A bad flag value is a command-line error (exit 2), naming the flag.
    let out = berth(
        &["master", "--heartbeat-ttl", "soon", "--print-config"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(failed(&out).contains("--heartbeat-ttl"));
}

#[test]
fn printed_config_is_a_config_file_that_reads_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    for (role, env) in [
        (
            "master",
            vec![
                ("BERTH_MASTER_HEARTBEAT_TTL", "11s"),
                ("BERTH_MASTER_HTTP", "off"),
            ],
        ),
        (
            "worker",
            vec![
                ("BERTH_WORKER_CPUS", "1.25"),
                ("BERTH_WORKER_DRAIN_ON_EXIT", "1"),
                ("BERTH_MASTER", "m:1"),
            ],
        ),
        (
            "dev",
            vec![
                ("BERTH_DEV_LISTEN", "127.0.0.1:0"),
                ("BERTH_WORKER_MEMORY", "3G"),
            ],
        ),
    ] {
        let first = ok(&berth(&[role, "--print-config"], &env));
        let file = dir.path().join(format!("{role}.toml"));
        std::fs::write(&file, &first).unwrap();
        let second = ok(&berth(
            &[role, "--config", file.to_str().unwrap(), "--print-config"],
            &[],
        ));
        let values = |t: &str| -> Vec<(String, String, String)> {
            printed(t)
                .into_iter()
                .flat_map(|(s, keys)| keys.into_iter().map(move |(k, (v, _))| (s.clone(), k, v)))
                .collect()
        };
        assert_eq!(
            values(&first),
            values(&second),
            "{role}:\n{first}\n{second}"
        );
    }
}

#[test]
fn client_commands_use_the_client_section() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.toml");
    // Nobody listens on port 1.
    std::fs::write(&file, "[client]\nmaster = \"127.0.0.1:1\"\ntoken = \"t\"\n").unwrap();
    let f = file.to_str().unwrap();
    let err = failed(&berth(&["workers", "--config", f], &[]));
    assert!(err.contains("the master at http://127.0.0.1:1"), "{err}");
    let err = failed(&berth(
        &["workers", "--config", f],
        &[("BERTH_MASTER", "http://127.0.0.1:2")],
    ));
    assert!(
        err.contains("the master at http://127.0.0.1:2"),
        "env beats the file: {err}"
    );
    let err = failed(&berth(
        &["workers", "--config", f, "--master", "http://127.0.0.1:3"],
        &[("BERTH_MASTER", "http://127.0.0.1:2")],
    ));
    assert!(
        err.contains("the master at http://127.0.0.1:3"),
        "the flag beats env: {err}"
    );
}

/// The flags of a unit's `ExecStart=` line: (subcommand, [--flag …]).
fn exec_start(unit: &str) -> (String, Vec<String>) {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert!(words[0].ends_with("/berth"), "{line}");
    let flags = words[2..]
        .iter()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.split('=').next().unwrap().to_string())
        .collect();
    (words[1].to_string(), flags)
}

#[test]
fn systemd_units_start_berth_with_flags_it_knows() {
    for (file, role) in [
        ("deploy/berth-master.service", "master"),
        ("deploy/berth-worker.service", "worker"),
    ] {
        let unit = std::fs::read_to_string(repo_file(file)).unwrap();
        let (sub, flags) = exec_start(&unit);
        assert_eq!(sub, role, "{file}");
        let help = ok(&berth(&[role, "--help"], &[]));
        for flag in &flags {
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{file}: {flag} is not in `berth {role} --help`"
            );
        }
        // The command line parses: with --print-config it must succeed.
        let mut args: Vec<String> = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(str::to_string)
            .collect();
        args.push("--print-config".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&berth(&args, &[]));
        for needed in ["Restart=on-failure", "User=berth", "StateDirectory="] {
            assert!(unit.contains(needed), "{file} lacks {needed}");
        }
    }
    let worker = std::fs::read_to_string(repo_file("deploy/berth-worker.service")).unwrap();
    assert!(
        worker.lines().any(|l| l.trim() == "KillMode=process"),
        "SIGTERM must stop the agent, not its tasks"
    );
}

/// `systemd-analyze verify`, where systemd is installed, with `ExecStart`
/// pointed at the binary under test.
#[test]
fn systemd_units_verify() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed; the flag check above still ran");
        return;
    };
    if !probe.status.success() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for name in ["berth-master.service", "berth-worker.service"] {
        let unit = std::fs::read_to_string(repo_file(&format!("deploy/{name}"))).unwrap();
        std::fs::write(
            dir.path().join(name),
            unit.replace("/usr/local/bin/berth", BERTH),
        )
        .unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.path().join(name))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Only complaints about this unit count (the host's own units may
        // have theirs).
        let ours: Vec<&str> = stderr.lines().filter(|l| l.contains(name)).collect();
        assert!(out.status.success() && ours.is_empty(), "{name}:\n{stderr}");
    }
}
