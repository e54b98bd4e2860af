//! The `aws-cost-exporter` binary: flags, logging, wiring. Everything else is in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use aws_cost_exporter::config::ConfigFormat;
use aws_cost_exporter::config_watch::ConfigWatch;
use aws_cost_exporter::lease::LeaseOptions;
use aws_cost_exporter::server::{self, Limits};
use aws_cost_exporter::{Exporter, ExporterOptions, SharedStorage, config, storage, web_config};
use aws_cost_simulator::{DEMO_SCALE, Publications, demo_replay, demo_simulator, system_clock};
use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Logfmt,
    Json,
}

/// Prometheus exporter for AWS Cost Explorer data.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Flags {
    /// Configuration file: the exporter's own YAML, or a Backstage app-config.yaml with
    /// InfraWallet's AWS integrations.
    #[arg(long = "config.file", default_value = "aws-cost-exporter.yaml")]
    config_file: PathBuf,
    /// Validate the configuration and exit, without calling AWS.
    #[arg(long = "config.check")]
    config_check: bool,
    /// How often to read --config.file and reload it, as SIGHUP does, when its content
    /// changed (a Kubernetes ConfigMap update included); 0 turns watching off.
    #[arg(
        long = "config.watch-interval",
        value_name = "DURATION",
        default_value = "10s",
        value_parser = parse_watch_interval
    )]
    watch_interval: Duration,
    /// Address to listen on (`:10067` means every interface) [default: :10067, or
    /// `:<exporter_port>` of an electrolux-oss/aws-cost-exporter file]
    #[arg(long = "web.listen-address")]
    listen_address: Option<String>,
    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", default_value = "/metrics")]
    telemetry_path: String,
    /// Web configuration file (exporter-toolkit format): TLS, basic authentication, headers.
    #[arg(long = "web.config.file", value_name = "FILE")]
    web_config_file: Option<PathBuf>,
    /// How long a client may take to send a request (and a TLS handshake), and how long an
    /// idle keep-alive connection stays open.
    #[arg(long = "web.read-timeout", default_value = "30s", value_parser = parse_timeout)]
    read_timeout: Duration,
    /// Connections served at once; more wait in the kernel's accept queue.
    #[arg(long = "web.max-connections", default_value_t = server::DEFAULT_MAX_CONNECTIONS, value_parser = parse_max_connections)]
    max_connections: usize,
    /// Enable POST /-/reload, which reloads the configuration as SIGHUP does.
    #[arg(long = "web.enable-lifecycle")]
    enable_lifecycle: bool,
    /// Only log messages with the given severity or above.
    #[arg(long = "log.level", default_value = "info", value_parser = ["debug", "info", "warn", "error"])]
    log_level: String,
    /// Output format of log messages.
    #[arg(long = "log.format", value_enum, default_value = "logfmt")]
    log_format: LogFormat,
    /// How many integrations refresh at once, at most.
    #[arg(long = "refresh.max-concurrency", default_value_t = aws_cost_exporter::refresh::MAX_CONCURRENCY, value_parser = parse_concurrency)]
    max_concurrency: usize,
    /// Where each integration's last snapshot and its day's count of billed Cost Explorer
    /// requests survive restarts: a directory (created if missing), or s3://BUCKET/PREFIX,
    /// shared by replicas that then refresh each integration once between them (leases).
    /// Off when not given.
    #[arg(long = "storage.path", value_name = "DIR|s3://BUCKET/PREFIX", value_parser = parse_storage_path)]
    storage_path: Option<StoragePath>,
    /// With s3:// storage: this replica's name in the leases (default: host name and process
    /// id; in Kubernetes, give the pod's name).
    #[arg(long = "storage.replica-id", value_name = "ID", value_parser = parse_replica_id)]
    replica_id: Option<String>,
    /// With s3:// storage: how long an integration's lease lasts without renewal; the holder
    /// renews it every quarter of this, and another replica takes it over after this.
    #[arg(long = "storage.lease-duration", default_value = "2m", value_parser = parse_timeout)]
    lease_duration: Duration,
    /// With s3:// storage: how often replicas poll leases and records (a conditional GET).
    #[arg(long = "storage.poll-interval", default_value = "10s", value_parser = parse_timeout)]
    poll_interval: Duration,
    /// Serve two demo integrations fed by a simulated Cost Explorer on loopback
    /// (no AWS account needed); --config.file is ignored.
    #[arg(long)]
    demo: bool,
    /// Accounts in the demo's simulated organization (with --demo or --demo.simulator).
    #[arg(long = "demo.scale", default_value_t = DEMO_SCALE, value_parser = parse_scale)]
    demo_scale: usize,
    /// Run only the demo's simulated Cost Explorer, STS and Organizations, on this address,
    /// for benchmarks: point examples/demo.yaml at it with AWS_COST_EXPORTER_DEMO_ENDPOINT.
    #[arg(
        long = "demo.simulator",
        value_name = "ADDRESS",
        conflicts_with = "demo"
    )]
    demo_simulator: Option<String>,
    /// With --demo or --demo.simulator: the simulated Cost Explorer publishes new cost data at
    /// these UTC times of each day, as AWS does a few times a day (such as
    /// "02:00,10:00,18:00": the open days grow, yesterday turns final, a late credit lands),
    /// so that change detection has something to detect. Without it the data never changes.
    #[arg(long = "demo.publications", value_name = "TIMES", value_parser = Publications::parse)]
    demo_publications: Option<Publications>,
}

/// The most accounts `--demo.scale` simulates (about 6.5 million cost series).
const MAX_DEMO_SCALE: usize = 100_000;

/// Where it listens unless told (or an electrolux file's `exporter_port` says).
const DEFAULT_LISTEN_ADDRESS: &str = ":10067";

/// The demo configuration, with `${AWS_COST_EXPORTER_DEMO_ENDPOINT}` for the simulator.
const DEMO_CONFIG: &str = include_str!("../examples/demo.yaml");

/// The demo configuration pointed at `endpoint`.
fn demo_config(endpoint: &str) -> Result<config::Config, config::ConfigError> {
    config::parse_with_env(DEMO_CONFIG, &|name| {
        (name == "AWS_COST_EXPORTER_DEMO_ENDPOINT").then(|| endpoint.to_string())
    })
}

/// The demo's simulated AWS: with `--demo.publications`, publishing on its schedule by the
/// system clock.
fn simulated(today: chrono::NaiveDate, flags: &Flags) -> aws_cost_simulator::SimulatorBuilder {
    match &flags.demo_publications {
        Some(publications) => demo_replay(
            today,
            flags.demo_scale,
            publications.clone(),
            system_clock(),
        ),
        None => demo_simulator(today, flags.demo_scale),
    }
}

/// `--storage.path`: a local directory or a place in S3.
#[derive(Debug, Clone)]
enum StoragePath {
    Dir(PathBuf),
    S3(storage::Location),
}

/// A local directory, or `s3://BUCKET[/PREFIX]`. Another URL is refused rather than taken for
/// a directory named after its scheme in the working directory.
fn parse_storage_path(text: &str) -> Result<StoragePath, String> {
    if let Some(location) = storage::Location::parse(text) {
        return location.map(StoragePath::S3);
    }
    match text.split_once("://") {
        Some((scheme, _))
            if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            Err(format!(
                "{scheme}:// is not a local directory, and S3 (s3://BUCKET/PREFIX) is the only shared storage; give a directory or an s3:// URL"
            ))
        }
        _ if text.is_empty() => Err("expected a directory".to_string()),
        _ => Ok(StoragePath::Dir(PathBuf::from(text))),
    }
}

fn parse_replica_id(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    match valid {
        true => Ok(text.to_string()),
        false => Err("expected 1 to 128 letters, digits, '-', '_' or '.'".into()),
    }
}

fn parse_scale(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(scale) if (1..=MAX_DEMO_SCALE).contains(&scale) => Ok(scale),
        _ => Err(format!(
            "expected a number of accounts from 1 to {MAX_DEMO_SCALE}"
        )),
    }
}

fn parse_concurrency(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a whole number of at least 1".to_string()),
    }
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err("must be greater than zero".into()),
        Err(err) => Err(format!("expected a duration such as 30s or 2m: {err}")),
    }
}

fn parse_watch_interval(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text)
        .map_err(|err| format!("expected a duration such as 10s or 1m, or 0 for off: {err}"))
}

fn parse_max_connections(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a number of connections, at least 1".into()),
    }
}

/// The most verbose level other crates (the AWS SDK, hyper) may log at, whatever `RUST_LOG`
/// asks: at trace level the SDK's orchestrator dumps whole client configurations with `Debug`,
/// and the assume-role credentials provider's dump includes the external id (tests/secrets.rs
/// finds it there). Their debug lines name access key ids (identifiers, not secrets) but no
/// secret, session token or external id.
const OTHER_CRATES_MAX_LEVEL: LevelFilter = LevelFilter::DEBUG;

fn init_logging(flags: &Flags) {
    // Our own level from --log.level; the AWS crates stay at warn unless RUST_LOG says otherwise.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "warn,aws_cost_exporter={0},aws_cost_exporter::main={0}",
            flags.log_level
        ))
    });
    // Applied after the filter above, so RUST_LOG cannot lift it.
    let cap = Targets::new()
        .with_default(OTHER_CRATES_MAX_LEVEL)
        .with_target("aws_cost_exporter", LevelFilter::TRACE);
    match flags.log_format {
        LogFormat::Logfmt => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .event_format(aws_cost_exporter::logfmt::Logfmt)
            .fmt_fields(aws_cost_exporter::logfmt::Logfmt)
            .with_writer(std::io::stderr)
            .finish()
            .with(cap)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .finish()
            .with(cap)
            .init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

async fn run(flags: Flags) -> anyhow::Result<()> {
    let today = chrono::Utc::now().date_naive();
    if let Some(address) = &flags.demo_simulator {
        let simulator = simulated(today, &flags)
            .start_on(address)
            .await
            .with_context(|| format!("starting the simulated Cost Explorer on {address}"))?;
        tracing::info!(endpoint = %simulator.endpoint(), accounts = flags.demo_scale, "demo: simulated Cost Explorer, STS and Organizations listening");
        shutdown_signal().await;
        return Ok(());
    }
    // Before the file is loaded, so that a change in between is reloaded rather than missed.
    let mut watch = match flags.demo || flags.config_check {
        true => None,
        false => ConfigWatch::start(&flags.config_file, flags.watch_interval).await,
    };
    let _simulator;
    let config = if flags.demo {
        let simulator = simulated(today, &flags)
            .start()
            .await
            .context("starting the simulated Cost Explorer")?;
        tracing::info!(endpoint = %simulator.endpoint(), accounts = flags.demo_scale, "demo: simulated Cost Explorer, STS and Organizations started");
        let config = demo_config(&simulator.endpoint())?;
        _simulator = simulator;
        config
    } else {
        config::load_file(&flags.config_file)?
    };
    let lease = LeaseOptions {
        duration: flags.lease_duration,
        poll_interval: flags.poll_interval,
    };
    lease.validate().map_err(anyhow::Error::msg)?;
    if flags.config_check {
        if let Some(file) = &flags.web_config_file {
            web_config::load(file)?;
            println!("web configuration OK: {}", file.display());
        }
        println!(
            "configuration OK: {} integration(s): {}",
            config.integrations.len(),
            config
                .integrations
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(());
    }
    let listen_address = match (&flags.listen_address, config.format) {
        (Some(address), _) => address.clone(),
        (
            None,
            ConfigFormat::Electrolux {
                exporter_port: Some(port),
            },
        ) => format!(":{port}"),
        (None, _) => DEFAULT_LISTEN_ADDRESS.to_string(),
    };
    let mut exporter = Exporter::start(
        config,
        ExporterOptions {
            listen_address,
            telemetry_path: flags.telemetry_path.clone(),
            refresh: aws_cost_exporter::refresh::RefreshOptions {
                max_concurrency: flags.max_concurrency,
                ..Default::default()
            },
            web_config_file: flags.web_config_file.clone(),
            limits: Limits {
                read_timeout: flags.read_timeout,
                max_connections: flags.max_connections,
            },
            enable_lifecycle: flags.enable_lifecycle,
            storage_path: match &flags.storage_path {
                Some(StoragePath::Dir(dir)) => Some(dir.clone()),
                _ => None,
            },
            shared_storage: match &flags.storage_path {
                Some(StoragePath::S3(location)) => Some(SharedStorage {
                    location: location.clone(),
                    s3: storage::S3Options::default(),
                    lease,
                    replica_id: flags.replica_id.clone(),
                }),
                _ => None,
            },
            ..ExporterOptions::default()
        },
    )
    .await?;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut hangup = Hangup::install();
    let mut reload_requests = exporter.take_reload_requests();
    if let Some(watch) = &watch {
        tracing::info!(
            file = %watch.path().display(),
            interval = %humantime::format_duration(watch.interval()),
            "watching the configuration file for changes"
        );
    }
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = hangup.recv() => {
                // The outcome is logged by reload itself.
                let _ = reload(&mut exporter, &flags, &mut watch).await;
            }
            () = next_change(&mut watch) => {
                tracing::info!(file = %flags.config_file.display(), "configuration file changed; reloading");
                let _ = reload(&mut exporter, &flags, &mut watch).await;
            }
            Some(request) = next_reload_request(&mut reload_requests) => {
                let outcome = reload(&mut exporter, &flags, &mut watch).await;
                // The client may have gone; the reload happened all the same.
                let _ = request.reply.send(outcome);
            }
        }
    }
    tracing::info!("shutting down");
    exporter.shutdown().await;
    Ok(())
}

async fn next_reload_request(
    requests: &mut Option<tokio::sync::mpsc::Receiver<server::ReloadRequest>>,
) -> Option<server::ReloadRequest> {
    match requests {
        Some(requests) => requests.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when `--config.file`'s content changed; never when it is not watched.
async fn next_change(watch: &mut Option<ConfigWatch>) {
    match watch {
        Some(watch) => watch.changed().await,
        None => std::future::pending().await,
    }
}

/// What SIGHUP, `POST /-/reload` and a change of the file's content all do: reload
/// `--config.file` (a file that fails validation is refused and the running configuration
/// stays) and re-read `--web.config.file`. The error says why the configuration was refused.
async fn reload(
    exporter: &mut Exporter,
    flags: &Flags,
    watch: &mut Option<ConfigWatch>,
) -> Result<(), String> {
    let web = exporter.reload_web_config().map_err(|err| err.to_string());
    if flags.demo {
        tracing::warn!("reload: --demo has no configuration file to reload");
        return web.and(Err("--demo has no configuration file to reload".into()));
    }
    if let Some(watch) = watch {
        // Whatever asked for the reload, the watch compares later reads with these bytes.
        watch.loading().await;
    }
    let config = match config::load_file(&flags.config_file) {
        Ok(config) => config,
        Err(err) => {
            exporter.reload_failed();
            tracing::error!(error = %err, "configuration reload failed; keeping the running configuration");
            return Err(err.to_string());
        }
    };
    let summary = exporter.reload(config).await;
    tracing::info!(
        added = %summary.added.join(","),
        changed = %summary.changed.join(","),
        removed = %summary.removed.join(","),
        unchanged = %summary.unchanged.join(","),
        "configuration reloaded"
    );
    web
}

/// SIGHUP, which asks for a configuration reload.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn install() -> Self {
        Hangup {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }

    /// Resolves on the next SIGHUP; never where there is none.
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal
            && signal.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await;
    }
}

/// glibc's malloc raises its mmap threshold whenever a large block is freed, so the pages a
/// refresh builds and the previous ones it frees end up in its arenas, which then grow and
/// fragment from refresh to refresh (bench/RESULTS.md: 51 to 131 MB over 50 refreshes of 100k
/// series). A fixed threshold keeps every large block in its own mapping, given back to the
/// system when freed: flat at 38 to 42 MB. (musl's malloc does this by itself.)
///
/// glibc also gives threads that allocate at once arenas of their own, up to 8 per core; the
/// refresh threads, the async workers and the scrapes they serve then each keep freed memory in
/// their own. Two arenas hold the 50-refresh soak at ~100k series flat at 47.3 to 47.5 MB,
/// against 47.8 to 48.9 MB and creeping with the default (bench/ANALYSIS.md). A
/// `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` of the user's is left as it is.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_freed_memory() {
    const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
    const ARENA_MAX: libc::c_int = 2;
    let arenas_chosen = std::env::var_os("MALLOC_ARENA_MAX").is_some_and(|v| !v.is_empty())
        || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
    // SAFETY: mallopt only sets a malloc parameter; it is called before any other thread
    // exists, and a refused setting (it returns 0) leaves glibc's default in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        if !arenas_chosen {
            libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_freed_memory() {}

fn main() -> ExitCode {
    return_freed_memory();
    let flags = Flags::parse();
    init_logging(&flags);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(flags)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "exiting");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
