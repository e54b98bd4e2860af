//! aws-cost-exporter: a Prometheus exporter for AWS Cost Explorer data.
//!
//! Data flows one way: [`config`] → [`credentials`] → [`cost_explorer`] → [`snapshot`] →
//! [`server`]. Each integration refreshes on its own schedule ([`refresh`]) into an immutable
//! snapshot that is swapped in atomically; scrapes answer from memory and never call AWS.

pub mod aggregate;
pub mod api_budget;
pub mod change;
pub mod clock;
pub mod config;
pub mod config_watch;
pub mod cost_explorer;
pub mod credentials;
pub mod electrolux;
pub mod exposition;
pub mod failure;
pub mod lease;
pub mod logfmt;
pub mod metrics;
pub mod model;
pub mod organizations;
pub mod parts;
pub mod refresh;
pub mod schema;
pub mod server;
pub mod snapshot;
pub mod storage;
pub mod web_config;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use aws_sdk_costexplorer::config::SharedInterceptor;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api_budget::{ApiBudget, CapInterceptor};
use crate::clock::Clock;
use crate::lease::{Coordinator, Replica};
use crate::metrics::Metrics;
use crate::model::{Config, Integration};
use crate::parts::PARTS;
use crate::refresh::{MakeRefresher, RefreshOptions, Refresher, Resumed, State, Turns};
use crate::server::{Limits, ReloadRequest, ServerState};
use crate::snapshot::SnapshotStore;
use crate::storage::Storage;
use crate::web_config::{WebConfigError, WebConfigSource};

/// How to serve.
#[derive(Clone)]
pub struct ExporterOptions {
    /// node_exporter style: `:10067`, `127.0.0.1:0`, `[::]:10067`.
    pub listen_address: String,
    pub telemetry_path: String,
    /// The wall clock (tests pin it).
    pub clock: Clock,
    /// Schedule, SDK timeouts and concurrency of refreshes (tests shorten the timings).
    pub refresh: RefreshOptions,
    /// `--web.config.file`: TLS, basic authentication and response headers.
    pub web_config_file: Option<PathBuf>,
    /// `--web.read-timeout` and `--web.max-connections`.
    pub limits: Limits,
    /// `--web.enable-lifecycle`: `POST /-/reload` asks for a reload (see
    /// [`Exporter::take_reload_requests`]).
    pub enable_lifecycle: bool,
    /// `--storage.path DIR`: where snapshots and request counts survive restarts.
    pub storage_path: Option<PathBuf>,
    /// `--storage.path s3://…`: storage shared by replicas, with leases (instead of a
    /// directory).
    pub shared_storage: Option<SharedStorage>,
}

/// Storage in S3 shared by replicas (see [`lease`]).
#[derive(Debug, Clone)]
pub struct SharedStorage {
    pub location: storage::Location,
    /// How the S3 client is made beyond the default chain (tests set an endpoint and keys).
    pub s3: storage::S3Options,
    pub lease: lease::LeaseOptions,
    /// `--storage.replica-id`: this replica's name in leases (default: host name and process
    /// id).
    pub replica_id: Option<String>,
}

impl Default for ExporterOptions {
    fn default() -> Self {
        Self {
            listen_address: ":10067".to_string(),
            telemetry_path: "/metrics".to_string(),
            clock: clock::system_clock(),
            refresh: RefreshOptions::default(),
            web_config_file: None,
            limits: Limits::default(),
            enable_lifecycle: false,
            storage_path: None,
            shared_storage: None,
        }
    }
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--web.telemetry-path must start with '/' and must not be one of /, /-/healthy, /-/ready, /-/reload: {0:?}"
    )]
    TelemetryPath(String),
    #[error(transparent)]
    WebConfig(#[from] WebConfigError),
    #[error("cannot start the refresh runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
}

/// A running exporter: the HTTP server and one refresh task per integration.
pub struct Exporter {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
    /// Running integrations by name.
    integrations: BTreeMap<String, RunningIntegration>,
    store: Arc<SnapshotStore>,
    metrics: Arc<Metrics>,
    clock: Clock,
    refresh_options: RefreshOptions,
    /// Caps how many integrations refresh at once.
    permits: Arc<tokio::sync::Semaphore>,
    /// Where the refresh tasks run (see [`refresh::runtime`]).
    refresh_runtime: Option<tokio::runtime::Runtime>,
    /// `--web.config.file`, re-read by the server as it needs it.
    web: Option<Arc<WebConfigSource>>,
    /// `POST /-/reload` requests, until taken.
    reload_requests: Option<mpsc::Receiver<ReloadRequest>>,
    /// `--storage.path`.
    storage: Option<Storage>,
    /// With shared storage: this replica, as the leases see it.
    replica: Option<Arc<Replica>>,
    /// Each integration's daily request cap, kept across reloads that change it.
    budgets: BTreeMap<String, Arc<ApiBudget>>,
}

/// One integration's refresh task, the settings it runs with, and what it publishes and keeps.
struct RunningIntegration {
    integration: Integration,
    data_delay_days: u32,
    stop: CancellationToken,
    task: JoinHandle<()>,
    state: Arc<std::sync::Mutex<State>>,
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
}

impl Exporter {
    /// Binds the listener, builds each integration's clients and starts the refresh tasks.
    pub async fn start(config: Config, options: ExporterOptions) -> Result<Exporter, StartError> {
        let path = &options.telemetry_path;
        if !path.starts_with('/')
            || matches!(
                path.as_str(),
                "/" | "/-/healthy" | "/-/ready" | server::RELOAD_PATH
            )
        {
            return Err(StartError::TelemetryPath(path.clone()));
        }
        let web = match &options.web_config_file {
            Some(file) => Some(Arc::new(WebConfigSource::load(file)?)),
            None => None,
        };
        let (listener, local_addr) =
            server::bind(&options.listen_address)
                .await
                .map_err(|source| StartError::Listen {
                    address: options.listen_address.clone(),
                    source,
                })?;
        // Before the refresh runtime exists: dropping it on an error here would panic.
        let storage = match (&options.shared_storage, &options.storage_path) {
            (Some(shared), _) => {
                let s3 = storage::S3Options {
                    attempt_timeout: Some(shared.lease.attempt_timeout()),
                    ..shared.s3.clone()
                };
                Some(Storage::open_s3(shared.location.clone(), &s3).await?)
            }
            (None, Some(path)) => Some(Storage::open(path)?),
            (None, None) => None,
        };
        let refresh_runtime = refresh::runtime().map_err(StartError::Runtime)?;
        let metrics = Arc::new(Metrics::with_clock(options.clock.clone()));
        let store = Arc::new(SnapshotStore::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let (reload_sender, reload_requests) = match options.enable_lifecycle {
            true => {
                let (sender, receiver) = mpsc::channel(8);
                (Some(sender), Some(receiver))
            }
            false => (None, None),
        };
        let state = Arc::new(ServerState {
            store: store.clone(),
            metrics: metrics.clone(),
            telemetry_path: options.telemetry_path.clone(),
            web: web.clone(),
            reload: reload_sender,
            limits: options.limits,
        });
        let server = tokio::spawn(server::serve(listener, state, shutdown.clone()));
        let replica = match (
            &options.shared_storage,
            storage.as_ref().and_then(Storage::bucket),
        ) {
            (Some(shared), Some(bucket)) => {
                let id = shared.replica_id.clone().unwrap_or_else(default_replica_id);
                let replica = Replica::new(id, bucket.clone(), shared.lease);
                refresh_runtime.spawn(replica.clone().run(shutdown.child_token()));
                tracing::info!(
                    replica = %replica.id(),
                    storage = %shared.location,
                    lease_duration = %humantime::format_duration(shared.lease.duration),
                    poll_interval = %humantime::format_duration(shared.lease.poll_interval),
                    "sharing records and leases with other replicas"
                );
                Some(replica)
            }
            _ => None,
        };
        let mut exporter = Exporter {
            local_addr,
            shutdown,
            server: Some(server),
            integrations: BTreeMap::new(),
            store,
            metrics,
            clock: options.clock.clone(),
            refresh_options: options.refresh,
            permits: Arc::new(tokio::sync::Semaphore::new(
                options.refresh.max_concurrency.max(1),
            )),
            refresh_runtime: Some(refresh_runtime),
            web,
            reload_requests,
            storage,
            replica,
            budgets: BTreeMap::new(),
        };
        exporter.reload(config).await;
        tracing::info!(
            address = %local_addr,
            telemetry_path = %options.telemetry_path,
            tls = exporter.web.as_ref().is_some_and(|w| w.for_request().tls.is_some()),
            basic_auth = exporter.web.as_ref().is_some_and(|w| w.for_request().requires_auth()),
            "listening"
        );
        Ok(exporter)
    }

    /// Applies a new configuration: integrations that are new or whose settings changed get a
    /// fresh refresh task; removed ones stop and their series go; unchanged ones keep running
    /// untouched. A changed integration's old task is stopped, its request in flight aborted,
    /// before the new task starts: one integration never refreshes twice at once. The new task
    /// takes over what the old one served and kept, part by part, as a restart takes over a
    /// stored snapshot: the parts whose settings are unchanged keep serving their series and
    /// are refreshed when due; the parts the reload turned off stop serving at once (their
    /// series and `aws_cost_query_success` go); changed and new parts are fetched at once.
    pub async fn reload(&mut self, config: Config) -> ReloadSummary {
        let mut summary = ReloadSummary::default();
        let wanted: Vec<String> = config.integrations.iter().map(|i| i.name.clone()).collect();
        let removed: Vec<String> = self
            .integrations
            .keys()
            .filter(|name| !wanted.contains(name))
            .cloned()
            .collect();
        for name in removed {
            if let Some(running) = self.integrations.remove(&name) {
                running.stop().await;
            }
            self.budgets.remove(&name);
            self.metrics.forget(&name);
            tracing::info!(integration = %name, "integration removed");
            summary.removed.push(name);
        }
        if let Some(replica) = &self.replica {
            replica.set_integrations(wanted.len());
        }
        self.store.set_integrations(wanted);
        for integration in config.integrations {
            let name = integration.name.clone();
            match self.integrations.remove(&name) {
                Some(running)
                    if running.integration == integration
                        && running.data_delay_days == config.data_delay_days =>
                {
                    self.integrations.insert(name.clone(), running);
                    summary.unchanged.push(name);
                    continue;
                }
                Some(running) => {
                    let state = running.stop().await;
                    for part in PARTS.iter().filter(|part| !(part.enabled)(&integration)) {
                        self.metrics.forget_query(&name, part.name);
                    }
                    summary.changed.push(name.clone());
                    let running = self
                        .spawn(integration, config.data_delay_days, Some(state))
                        .await;
                    self.integrations.insert(name, running);
                    continue;
                }
                None => summary.added.push(name.clone()),
            }
            let running = self.spawn(integration, config.data_delay_days, None).await;
            self.integrations.insert(name, running);
        }
        let now = (self.clock)().timestamp_millis() as f64 / 1000.0;
        self.metrics.record_config_load(true, now);
        summary
    }

    /// `POST /-/reload` requests (with `--web.enable-lifecycle`): whoever reloads on SIGHUP
    /// answers them the same way. `None` without the flag, or once taken.
    pub fn take_reload_requests(&mut self) -> Option<mpsc::Receiver<ReloadRequest>> {
        self.reload_requests.take()
    }

    /// Re-reads `--web.config.file` (on SIGHUP or `POST /-/reload`); on error the previous web
    /// configuration stays in force.
    pub fn reload_web_config(&self) -> Result<(), WebConfigError> {
        match &self.web {
            Some(web) => web.reload(),
            None => Ok(()),
        }
    }

    /// Records a configuration that failed to load on reload (the running one stays).
    pub fn reload_failed(&self) {
        self.metrics.record_config_load(false, 0.0);
    }

    /// Starts an integration's refresh task. It takes over from `previous`, the state of the
    /// integration's previous task (a reload changed its settings), or else from its stored
    /// snapshot, if `--storage.path` has a good one.
    async fn spawn(
        &mut self,
        integration: Integration,
        data_delay_days: u32,
        previous: Option<Arc<std::sync::Mutex<State>>>,
    ) -> RunningIntegration {
        tracing::info!(
            integration = %integration.name,
            account_id = %integration.account_id,
            credentials = %credentials::CredentialSource::for_integration(&integration).describe(),
            refresh_interval = %humantime::format_duration(integration.refresh_interval),
            cost_basis = %integration.cost_basis.iter().map(|b| b.as_str()).collect::<Vec<_>>().join(","),
            "integration configured"
        );
        self.metrics
            .set_labels(&integration.name, &integration.labels);
        let budget = self.budget(&integration).await;
        let clients = credentials::clients_with(
            &integration,
            &self.metrics,
            self.refresh_options.timeouts,
            Some(SharedInterceptor::new(CapInterceptor(budget.clone()))),
        )
        .await;
        let make: MakeRefresher = {
            let (integration, store, metrics, clock) = (
                integration.clone(),
                self.store.clone(),
                self.metrics.clone(),
                self.clock.clone(),
            );
            let (options, permits, storage) = (
                self.refresh_options,
                self.permits.clone(),
                self.storage.clone(),
            );
            Arc::new(move || {
                let refresher = Refresher::new(
                    integration.clone(),
                    clients.clone(),
                    data_delay_days,
                    store.clone(),
                    metrics.clone(),
                    clock.clone(),
                )
                .with_schedule(options, permits.clone())
                .with_budget(budget.clone());
                match &storage {
                    Some(storage) => refresher.with_storage(storage.clone()),
                    None => refresher,
                }
            })
        };
        let mut refresher = make();
        if let (Some(replica), Some(storage)) = (&self.replica, &self.storage)
            && let Some(bucket) = storage.bucket()
        {
            // The lease decides whether this replica refreshes or serves the holder's records.
            let state = refresher.state();
            let coordinator = Coordinator {
                integration: integration.name.clone(),
                bucket: bucket.clone(),
                replica: replica.clone(),
                metrics: self.metrics.clone(),
                clock: self.clock.clone(),
                duty: Turns::new(
                    integration.clone(),
                    data_delay_days,
                    storage.clone(),
                    make,
                    state.clone(),
                ),
            };
            return self.run_task(integration, data_delay_days, state, |stop| {
                coordinator.run(stop)
            });
        }
        let resumed = match &previous {
            Some(state) => {
                Resumed::from_previous(&clock::lock(state), &integration, data_delay_days).map(
                    |resumed| {
                        (
                            resumed,
                            "serving the unchanged parts' series until the next refresh is due",
                        )
                    },
                )
            }
            None => match &self.storage {
                Some(storage) => load_stored_snapshot(storage, &integration, data_delay_days)
                    .await
                    .map(|resumed| {
                        (
                            resumed,
                            "serving the stored snapshot until the next refresh is due",
                        )
                    }),
                None => None,
            },
        };
        if let Some((resumed, message)) = resumed {
            if !resumed.changed.is_empty() {
                tracing::info!(
                    integration = %integration.name,
                    parts = %resumed.changed.join(","),
                    "not serving series shaped by other settings of the integration"
                );
            }
            let serves = resumed.serves_anything();
            let owed = resumed.owed();
            // A predecessor's snapshot is replaced even when nothing of it is served any more.
            if serves || previous.is_some() {
                refresher = refresher.resume(resumed);
            }
            if let Some(snapshot) = self.store.get(&integration.name).filter(|_| serves) {
                tracing::info!(
                    integration = %integration.name,
                    fetched_at = %snapshot.fetched_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    series = snapshot.series_count(),
                    refreshing_now = %owed,
                    "{message}"
                );
            }
        }
        let state = refresher.state();
        self.run_task(integration, data_delay_days, state, |stop| {
            refresher.run(stop)
        })
    }

    /// Runs an integration's task on the refresh runtime, until stopped.
    fn run_task<F>(
        &self,
        integration: Integration,
        data_delay_days: u32,
        state: Arc<std::sync::Mutex<State>>,
        run: impl FnOnce(CancellationToken) -> F,
    ) -> RunningIntegration
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let stop = self.shutdown.child_token();
        let run = run(stop.clone());
        let task = match &self.refresh_runtime {
            Some(runtime) => runtime.spawn(run),
            None => tokio::spawn(run),
        };
        RunningIntegration {
            integration,
            data_delay_days,
            stop,
            task,
            state,
        }
    }

    /// The integration's daily request cap: the running one (with the new limit), or a new one
    /// that starts from the count stored for today.
    async fn budget(&mut self, integration: &Integration) -> Arc<ApiBudget> {
        let limit = integration.max_api_requests_per_day;
        if let Some(budget) = self.budgets.get(&integration.name) {
            budget.set_limit(limit);
            return budget.clone();
        }
        let (name, clock, storage, metrics) = (
            integration.name.clone(),
            self.clock.clone(),
            self.storage.clone(),
            self.metrics.clone(),
        );
        let budget = Arc::new(
            tokio::task::spawn_blocking(move || {
                ApiBudget::new(&name, limit, clock, storage, metrics)
            })
            .await
            .unwrap_or_else(|_| {
                // Reading the count panicked: start counting from zero, and say so.
                tracing::warn!(integration = %integration.name, "cannot read the stored count of Cost Explorer requests");
                ApiBudget::new(
                    &integration.name,
                    limit,
                    self.clock.clone(),
                    None,
                    self.metrics.clone(),
                )
            }),
        );
        self.budgets
            .insert(integration.name.clone(), budget.clone());
        budget
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn store(&self) -> &Arc<SnapshotStore> {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops the refresh tasks, stops accepting connections and lets in-flight scrapes finish.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        for running in std::mem::take(&mut self.integrations).into_values() {
            running.stop().await;
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // Without blocking: an exporter may be dropped inside the async runtime.
        if let Some(runtime) = self.refresh_runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// This replica's default name in leases: the host name (in Kubernetes, the pod's name) and the
/// process id, with a sequence number after the first exporter of a process.
fn default_replica_id() -> String {
    static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let host = host_name().unwrap_or_else(|| "replica".to_string());
    let pid = std::process::id();
    match STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
        0 => format!("{host}-{pid}"),
        n => format!("{host}-{pid}-{n}"),
    }
}

/// The host name, if the system gives one.
fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let result = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if result != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    (!name.is_empty()).then_some(name)
}

/// Reads an integration's stored snapshot and takes over what it can, off the async workers;
/// a file that cannot be used is reported in one log line and ignored.
async fn load_stored_snapshot(
    storage: &Storage,
    integration: &Integration,
    data_delay_days: u32,
) -> Option<Resumed> {
    let (reader, config) = (storage.clone(), integration.clone());
    let result = tokio::task::spawn_blocking(move || {
        reader.load_snapshot(&config.name).map(|stored| {
            stored.map(|stored| Resumed::from_stored(&stored, &config, data_delay_days))
        })
    })
    .await;
    let error = match result {
        Ok(Ok(resumed)) => return resumed,
        Ok(Err(err)) => err.to_string(),
        Err(err) => err.to_string(),
    };
    tracing::warn!(
        integration = %integration.name,
        file = %storage.snapshot_location(&integration.name),
        error = %error,
        "ignoring the stored snapshot; refreshing at once"
    );
    None
}

impl RunningIntegration {
    /// Stops the task (its request in flight aborted); returns what it published and kept.
    async fn stop(self) -> Arc<std::sync::Mutex<State>> {
        self.stop.cancel();
        let _ = self.task.await;
        self.state
    }
}
