//! aws-cost-exporter: a Prometheus exporter for AWS Cost Explorer data.
//!
//! Data flows one way: [`config`] → [`credentials`] → [`cost_explorer`] → [`snapshot`] →
//! [`server`]. Each integration refreshes on its own schedule ([`refresh`]) into an immutable
//! snapshot that is swapped in atomically; scrapes answer from memory and never call AWS.

pub mod config;
pub mod cost_explorer;
pub mod credentials;
pub mod demo;
pub mod exposition;
pub mod metrics;
pub mod organizations;
pub mod refresh;
pub mod server;
pub mod snapshot;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::refresh::{Clock, Refresher};
use crate::server::ServerState;
use crate::snapshot::SnapshotStore;

/// How to serve.
#[derive(Clone)]
pub struct ExporterOptions {
    /// node_exporter style: `:10067`, `127.0.0.1:0`, `[::]:10067`.
    pub listen_address: String,
    pub telemetry_path: String,
    /// The wall clock (tests pin it).
    pub clock: Clock,
}

impl Default for ExporterOptions {
    fn default() -> Self {
        Self {
            listen_address: ":10067".to_string(),
            telemetry_path: "/metrics".to_string(),
            clock: refresh::system_clock(),
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
        "--web.telemetry-path must start with '/' and must not be one of /, /-/healthy, /-/ready: {0:?}"
    )]
    TelemetryPath(String),
}

/// A running exporter: the HTTP server and one refresh task per integration.
pub struct Exporter {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    refreshers: Vec<JoinHandle<()>>,
    store: Arc<SnapshotStore>,
    metrics: Arc<Metrics>,
}

impl Exporter {
    /// Binds the listener, builds each integration's clients and starts the refresh tasks.
    pub async fn start(config: Config, options: ExporterOptions) -> Result<Exporter, StartError> {
        let path = &options.telemetry_path;
        if !path.starts_with('/') || matches!(path.as_str(), "/" | "/-/healthy" | "/-/ready") {
            return Err(StartError::TelemetryPath(path.clone()));
        }
        let (listener, local_addr) =
            server::bind(&options.listen_address)
                .await
                .map_err(|source| StartError::Listen {
                    address: options.listen_address.clone(),
                    source,
                })?;
        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(SnapshotStore::new(
            config.integrations.iter().map(|i| i.name.clone()).collect(),
        ));
        let shutdown = CancellationToken::new();
        let mut refreshers = Vec::with_capacity(config.integrations.len());
        for integration in &config.integrations {
            tracing::info!(
                integration = %integration.name,
                account_id = %integration.account_id,
                credentials = %credentials::CredentialSource::for_integration(integration).describe(),
                refresh_interval = %humantime::format_duration(integration.refresh_interval),
                cost_basis = %integration.cost_basis.iter().map(|b| b.as_str()).collect::<Vec<_>>().join(","),
                "integration configured"
            );
            let refresher = Refresher::new(
                integration.clone(),
                credentials::clients(integration, &metrics).await,
                config.data_delay_days,
                store.clone(),
                metrics.clone(),
                options.clock.clone(),
            );
            refreshers.push(tokio::spawn(refresher.run(shutdown.clone())));
        }
        let state = Arc::new(ServerState {
            store: store.clone(),
            metrics: metrics.clone(),
            telemetry_path: options.telemetry_path.clone(),
        });
        let server = tokio::spawn(server::serve(listener, state, shutdown.clone()));
        tracing::info!(address = %local_addr, telemetry_path = %options.telemetry_path, "listening");
        Ok(Exporter {
            local_addr,
            shutdown,
            server,
            refreshers,
            store,
            metrics,
        })
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
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for task in self.refreshers {
            let _ = task.await;
        }
        let _ = self.server.await;
    }

    /// Runs until `signal` resolves, then shuts down gracefully.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}
