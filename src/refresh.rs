//! The refresh scheduler: one task per integration, first at start-up, then every interval.
//!
//! A failed refresh keeps serving the integration's last good snapshot, sets
//! `aws_cost_refresh_success` to 0, logs why, and is retried with exponential backoff (from
//! [`RETRY_MIN`], never later than the regular interval). One integration never waits on another.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::Integration;
use crate::cost_explorer::{CostExplorer, CostExplorerError};
use crate::metrics::Metrics;
use crate::snapshot::{IntegrationSnapshot, Period, SnapshotStore};

/// The first retry delay after a failed refresh.
pub const RETRY_MIN: Duration = Duration::from_secs(60);

/// The wall clock, replaceable in tests.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// Everything one integration's refresh task needs.
pub struct Refresher {
    pub integration: Integration,
    pub cost_explorer: CostExplorer,
    pub data_delay_days: u32,
    pub store: Arc<SnapshotStore>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
}

/// The outcome of one successful refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshSummary {
    pub series: usize,
    pub requests: u32,
}

impl Refresher {
    /// Queries Cost Explorer and publishes a new snapshot.
    pub async fn refresh_once(&self) -> Result<RefreshSummary, CostExplorerError> {
        let today = (self.clock)().date_naive();
        let period = Period::new(today, self.data_delay_days);
        let bases = &self.integration.cost_basis;
        let data = self
            .cost_explorer
            .daily_costs(period.query_start(), period.query_end(), bases)
            .await?;
        let snapshot = IntegrationSnapshot::build(&self.integration.name, &data, bases, period);
        let summary = RefreshSummary {
            series: snapshot.series_count(),
            requests: data.requests,
        };
        self.store.publish(snapshot);
        Ok(summary)
    }

    /// One attempt, with its metrics and its log line. Returns whether it succeeded.
    pub async fn attempt(&self) -> bool {
        let started = Instant::now();
        let result = self.refresh_once().await;
        let elapsed = started.elapsed().as_secs_f64();
        let finished = (self.clock)().timestamp_millis() as f64 / 1000.0;
        let name = &self.integration.name;
        self.metrics
            .record_refresh(name, result.is_ok(), elapsed, finished);
        match result {
            Ok(summary) => {
                tracing::info!(
                    integration = %name,
                    outcome = "success",
                    duration_seconds = elapsed,
                    series = summary.series,
                    requests = summary.requests,
                    "refresh finished"
                );
                true
            }
            Err(err) => {
                tracing::warn!(
                    integration = %name,
                    outcome = "failure",
                    duration_seconds = elapsed,
                    error = %err,
                    "refresh failed; serving the last good data"
                );
                false
            }
        }
    }

    /// Refreshes now, then on schedule, until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let interval = self.integration.refresh_interval;
        let mut failures: u32 = 0;
        loop {
            let ok = tokio::select! {
                ok = self.attempt() => ok,
                _ = shutdown.cancelled() => return,
            };
            failures = if ok { 0 } else { failures.saturating_add(1) };
            let delay = next_delay(interval, failures);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// The wait before the next attempt: the interval after a success, else a backoff doubling
/// from [`RETRY_MIN`] and never longer than the interval.
pub fn next_delay(interval: Duration, consecutive_failures: u32) -> Duration {
    if consecutive_failures == 0 {
        return interval;
    }
    let factor = 1u32
        .checked_shl(consecutive_failures - 1)
        .unwrap_or(u32::MAX);
    RETRY_MIN.saturating_mul(factor).min(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_interval() {
        let six_hours = Duration::from_secs(6 * 3600);
        assert_eq!(next_delay(six_hours, 0), six_hours);
        assert_eq!(next_delay(six_hours, 1), Duration::from_secs(60));
        assert_eq!(next_delay(six_hours, 2), Duration::from_secs(120));
        assert_eq!(next_delay(six_hours, 5), Duration::from_secs(960));
        assert_eq!(next_delay(six_hours, 40), six_hours);
        assert_eq!(
            next_delay(Duration::from_secs(30), 1),
            Duration::from_secs(30)
        );
    }
}
