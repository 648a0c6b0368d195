//! The long-running roles: `berth master` and `berth dev` (one startup,
//! [`node`]: a master, with a local worker for dev) and `berth worker`. Owns everything around the library entry points
//! `berth_master::start` and `berth_worker::run`: logging (`logging`), shutdown on
//! SIGINT/SIGTERM or when the shell exits, the hints printed at start, and
//! supervising the services so that one stopping stops the rest.

use crate::client::Client;
use crate::config::Node;
use crate::logging::{self, LogFormat};
use crate::shell::{self, ShellOptions};
use anyhow::{Context, anyhow};
use berth_core::units::{format_cores, format_gb_unit};
use berth_master::{MasterConfig, MasterHandle};
use berth_worker::{Detected, WorkerConfig};
use std::future::Future;
use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::runtime::Runtime;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A one-shot, many-listener stop signal.
#[derive(Clone)]
pub struct Shutdown(Arc<watch::Sender<bool>>);

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown(Arc::new(watch::channel(false).0))
    }

    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once [`Shutdown::trigger`] has been called.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

impl Default for Shutdown {
    fn default() -> Shutdown {
        Shutdown::new()
    }
}

/// Trigger `shutdown` on SIGTERM, and on SIGINT too when `sigint` (a
/// terminal shell handles Ctrl-C itself). Registered before returning.
fn stop_on_signals(rt: &Runtime, shutdown: &Shutdown, sigint: bool) -> anyhow::Result<()> {
    let _guard = rt.enter();
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = if sigint {
        Some(signal(SignalKind::interrupt()).context("installing the SIGINT handler")?)
    } else {
        None
    };
    let shutdown = shutdown.clone();
    rt.spawn(async move {
        let interrupted = async {
            match int.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = term.recv() => eprintln!("SIGTERM: stopping"),
            _ = interrupted => eprintln!("\ninterrupted: stopping"),
        }
        shutdown.trigger();
    });
    Ok(())
}

/// A service runs until shutdown; an error ends it early.
type Service = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Run every service to its end. The first to end (for any reason) stops
/// the others; the first error is returned.
async fn supervise(
    services: Vec<(&'static str, Service)>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut set = JoinSet::new();
    for (name, service) in services {
        set.spawn(async move { (name, service.await) });
    }
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        let result = match joined {
            Ok((name, r)) => r.with_context(|| format!("the {name} stopped")),
            Err(e) => Err(anyhow!("a service panicked: {e}")),
        };
        if let Err(e) = result
            && first_error.is_none()
        {
            first_error = Some(e);
        }
        shutdown.trigger();
    }
    first_error.map_or(Ok(()), Err)
}

/// Serve until a signal stops everything, or — with a terminal — open the
/// shell and stop everything when it exits. A signal or a failing service
/// while the shell is open ends the process (after restoring the
/// terminal), since the shell is blocked reading a line.
fn serve(
    rt: &Runtime,
    services: Vec<(&'static str, Service)>,
    shutdown: Shutdown,
    shell: Option<(String, String, ShellOptions)>,
) -> anyhow::Result<bool> {
    let Some((url, token, opts)) = shell else {
        rt.block_on(supervise(services, shutdown))?;
        return Ok(true);
    };
    let terminal = terminal::Saved::capture();
    let leaving = Arc::new(AtomicBool::new(false));
    let supervisor = {
        let leaving = leaving.clone();
        let shutdown = shutdown.clone();
        rt.spawn(async move {
            let result = supervise(services, shutdown).await;
            if !leaving.load(Ordering::SeqCst) {
                // Stopped under the shell's feet: leave now.
                terminal.restore();
                match &result {
                    Ok(()) => eprintln!("\nstopped"),
                    Err(e) => eprintln!("\nerror: {e:#}"),
                }
                std::process::exit(i32::from(result.is_err()));
            }
            result
        })
    };
    let shell_result = rt
        .block_on(Client::connect(&url, &token))
        .and_then(|client| shell::run(rt, &client, opts));
    leaving.store(true, Ordering::SeqCst);
    shutdown.trigger();
    let served = rt
        .block_on(supervisor)
        .map_err(|e| anyhow!("supervisor failed: {e}"))?;
    let ok = shell_result?;
    served?;
    Ok(ok)
}

fn start_master(
    rt: &Runtime,
    config: &MasterConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<MasterHandle> {
    rt.block_on(berth_master::start(config.clone(), shutdown.wait()))
        .context("cannot start the master")
}

fn master_service(handle: MasterHandle) -> Service {
    Box::pin(async move { handle.wait().await.map_err(anyhow::Error::from) })
}

/// `berth worker`.
pub fn worker(rt: &Runtime, config: WorkerConfig, log_format: LogFormat) -> anyhow::Result<bool> {
    logging::init(None, "info", log_format)?;
    if config.token.is_empty() {
        return Err(anyhow!(
            "a worker needs the cluster token: pass --token or set BERTH_TOKEN \
             (the master prints it at first start and keeps it in its DATA_DIR/token)"
        ));
    }
    let detected =
        berth_worker::detect(&config).context("cannot detect this machine's resources")?;
    print!("{}", describe_worker(&config.name, &detected));
    if !config.labels.is_empty() {
        let labels: Vec<String> = config
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("  Labels:  {}", labels.join(", "));
    }
    println!("Connecting to the master at {}", config.master);
    let shutdown = Shutdown::new();
    stop_on_signals(rt, &shutdown, true)?;
    let services = vec![("worker", worker_service(config, &shutdown))];
    serve(rt, services, shutdown, None)
}

fn worker_service(config: WorkerConfig, shutdown: &Shutdown) -> Service {
    let stop = shutdown.wait();
    Box::pin(async move {
        berth_worker::run(config, stop)
            .await
            .map_err(anyhow::Error::from)
    })
}

/// What `detect` found, as printed at worker start.
pub fn describe_worker(name: &str, d: &Detected) -> String {
    let mut out = format!("Worker {name} (node {})\n", d.node_id);
    out.push_str(&format!(
        "  CPU:     {} cores\n",
        format_cores(d.total.cpu_millis)
    ));
    out.push_str(&format!(
        "  Memory:  {}\n",
        format_gb_unit(d.total.memory_bytes)
    ));
    out.push_str(&format!(
        "  Storage: {}\n",
        format_gb_unit(d.total.storage_bytes)
    ));
    out.push_str(&format!("  GPUs:    {}\n", d.total.gpus));
    for g in &d.gpus {
        let mut line = format!("    [{}] {}", g.index, g.model);
        if g.memory_bytes > 0 {
            line.push_str(&format!(", {}", format_gb_unit(g.memory_bytes)));
        }
        if !g.uuid.is_empty() {
            line.push_str(&format!(", {}", g.uuid));
        }
        out.push_str(&line);
        out.push('\n');
    }
    let drivers = if d.drivers.is_empty() {
        "none".to_string()
    } else {
        d.drivers.join(", ")
    };
    out.push_str(&format!("  Drivers: {drivers}\n"));
    out
}

/// `berth master` and `berth dev`: start the master, and beside it the
/// local worker of `berth dev` (it dials this master with its token).
/// With a terminal, open the shell; leaving it stops everything.
pub fn node(rt: &Runtime, node: Node) -> anyhow::Result<bool> {
    let Node {
        master: config,
        log_format,
        local_worker,
    } = node;
    let interactive = std::io::stdin().is_terminal();
    let log_file = if local_worker.is_some() {
        "dev.log"
    } else {
        "master.log"
    };
    logging::init(
        interactive
            .then(|| config.data_dir.join(log_file))
            .as_deref(),
        "info",
        log_format,
    )?;
    let shutdown = Shutdown::new();
    stop_on_signals(rt, &shutdown, !interactive)?;
    let handle = start_master(rt, &config, &shutdown)?;
    let url = local_url(handle.grpc_addr);
    let mut services = Vec::new();
    match local_worker {
        None => print_master_hints(&config, &handle),
        Some(mut worker_config) => {
            worker_config.master = url.clone();
            worker_config.token = handle.token.clone();
            let detected = match berth_worker::detect(&worker_config) {
                Ok(d) => d,
                Err(e) => {
                    shutdown.trigger();
                    let _ = rt.block_on(handle.wait());
                    return Err(
                        anyhow::Error::new(e).context("cannot detect this machine's resources")
                    );
                }
            };
            println!(
                "berth dev: master on {url} (HTTP {}), data in {}",
                http_text(handle.http_addr),
                config.data_dir.display()
            );
            print!("{}", describe_worker(&worker_config.name, &detected));
            println!("Use it from another terminal:");
            println!("  export BERTH_MASTER={url} BERTH_TOKEN={}", handle.token);
            services.push(("worker", worker_service(worker_config, &shutdown)));
        }
    }
    if !interactive {
        println!("Serving; stop with Ctrl-C or SIGTERM.");
    }
    let shell = interactive.then(|| {
        let opts = ShellOptions {
            prompt: "master> ".to_string(),
            history: Some(config.data_dir.join("history")),
        };
        (url.clone(), handle.token.clone(), opts)
    });
    services.push(("master", master_service(handle)));
    serve(rt, services, shutdown, shell)
}

/// The first-start hints (token and how to use it), or where the token is.
fn print_master_hints(config: &MasterConfig, handle: &MasterHandle) {
    let advertised = advertised_url(handle.grpc_addr);
    let token_file = config.data_dir.join("token");
    println!(
        "berth master: gRPC on {}, HTTP {}, data in {}",
        handle.grpc_addr,
        http_text(handle.http_addr),
        config.data_dir.display()
    );
    if config.require_registration {
        println!(
            "Only registered worker names may join: `berth register NAME` (or `register NAME` in the shell)."
        );
    }
    if handle.token_created {
        println!(
            "Created the cluster token (kept in {}). Clients and workers need it:",
            token_file.display()
        );
        println!("  export BERTH_MASTER={advertised}");
        println!("  export BERTH_TOKEN={}", handle.token);
        println!("  berth worker --master {advertised} --name NAME --data-dir DIR");
    } else {
        println!(
            "Cluster token in {}; clients and workers use:",
            token_file.display()
        );
        println!(
            "  export BERTH_MASTER={advertised} BERTH_TOKEN=$(cat {})",
            token_file.display()
        );
    }
}

fn http_text(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "off".to_string(), |a| a.to_string())
}

/// The URL this process uses to reach a master bound at `addr` (a wildcard
/// bind is reached on loopback).
pub fn local_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// The URL other machines should use: the host name for a wildcard bind.
fn advertised_url(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("http://{}:{}", berth_worker::hostname(), addr.port())
    } else {
        format!("http://{addr}")
    }
}

/// Putting the terminal back after raw-mode line editing when the process
/// must exit from under the shell.
mod terminal {
    pub struct Saved(Option<libc::termios>);

    impl Saved {
        /// The terminal's settings now (before the line editor changes them).
        pub fn capture() -> Saved {
            // SAFETY: termios is plain data; tcgetattr fills it or fails,
            // and we keep it only on success.
            unsafe {
                let mut t: libc::termios = std::mem::zeroed();
                Saved((libc::tcgetattr(0, &mut t) == 0).then_some(t))
            }
        }

        pub fn restore(&self) {
            if let Some(t) = &self.0 {
                // SAFETY: `t` came from tcgetattr on the same descriptor.
                unsafe {
                    libc::tcsetattr(0, libc::TCSANOW, t);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::Resources;
    use berth_core::units::GIB;

    #[test]
    fn wildcard_binds_are_reached_on_loopback() {
        assert_eq!(
            local_url("0.0.0.0:7700".parse().unwrap()),
            "http://127.0.0.1:7700"
        );
        assert_eq!(local_url("[::]:7700".parse().unwrap()), "http://[::1]:7700");
        assert_eq!(
            local_url("10.0.0.5:1".parse().unwrap()),
            "http://10.0.0.5:1"
        );
    }

    #[test]
    fn worker_description() {
        let d = Detected {
            total: Resources {
                cpu_millis: 20_000,
                memory_bytes: 8 * GIB,
                storage_bytes: 100 * GIB,
                gpus: 0,
            },
            gpus: vec![],
            drivers: vec!["process".into(), "docker".into()],
            node_id: "n-1".into(),
        };
        let text = describe_worker("Tessa", &d);
        assert!(
            text.starts_with("Worker Tessa (node n-1)\n  CPU:     20.0 cores\n"),
            "{text}"
        );
        assert!(text.contains("  Drivers: process, docker\n"), "{text}");
    }
}
