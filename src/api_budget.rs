//! `max_api_requests_per_day`: a hard cap on an integration's billed Cost Explorer requests
//! per UTC day.
//!
//! An interceptor on the integration's Cost Explorer client ([`CapInterceptor`]) takes one
//! request from the day's allowance before every attempt (retries included), and refuses the
//! attempt before it is signed or sent once the allowance is spent. Every Cost Explorer
//! operation is billed (costs, resources, forecasts, commitments, anomalies, each page);
//! Organizations and STS have their own clients and are free. Nothing that
//! loops (paging, retries, refreshes, reloads) can pass the cap, because the check sits on the
//! only path to the wire.
//!
//! With `--storage.path`, the count survives restarts: before a request beyond what is already
//! on disk, a block of [`RESERVE_BLOCK`] requests is reserved in the integration's count file
//! (written atomically), and a restart on the same UTC day starts from the reserved figure. A
//! crash can only over-count (by less than a block), never under-count, however often it
//! repeats. With `--storage.path s3://…` the replicas share the count: a block is reserved by
//! replacing the stored count only if it is still the version read
//! ([`Storage::reserve_count`]), starting from the larger of the replica's own count and the
//! stored one, so that blocks never overlap and all replicas together never pass the cap. When
//! the shared count cannot be read and replaced, requests beyond the replica's last block are
//! refused (and it says so once): the cap holds through S3 outages. A local directory that
//! cannot be written only logs, and counting goes on.

use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use chrono::{DateTime, NaiveDate, Utc};

use crate::clock::{Clock, lock};
use crate::metrics::Metrics;
use crate::storage::{Reservation, Storage};

/// Requests reserved on disk at a time.
pub const RESERVE_BLOCK: u64 = 20;

/// The error the interceptor refuses a request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the daily cap of {limit} billed Cost Explorer requests (max_api_requests_per_day) is reached"
)]
pub struct CapReached {
    pub limit: u64,
}

/// One integration's allowance of billed requests for the UTC day.
pub struct ApiBudget {
    integration: String,
    clock: Clock,
    storage: Option<Storage>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    limit: u64,
    /// The UTC day counted.
    day: NaiveDate,
    /// Requests let through that day (after a restart: what was reserved on disk).
    used: u64,
    /// Requests reserved on disk for that day.
    reserved: u64,
    /// Requests refused, ever: a refresh compares it before and after.
    refusals: u64,
    /// Whether the last attempt to write the count failed (logged once per streak).
    write_failing: bool,
}

impl std::fmt::Debug for ApiBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiBudget")
            .field("integration", &self.integration)
            .field("state", &*lock(&self.state))
            .finish_non_exhaustive()
    }
}

impl ApiBudget {
    /// The allowance of `integration`, starting from the count stored for today, if any
    /// (reads a small file: blocking).
    pub fn new(
        integration: &str,
        limit: u64,
        clock: Clock,
        storage: Option<Storage>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let today = clock().date_naive();
        let (mut day, mut used) = (today, 0);
        if let Some(storage) = &storage {
            match storage.load_count(integration) {
                Ok(Some((stored_day, reserved))) if stored_day >= today => {
                    (day, used) = (stored_day, reserved);
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(
                    integration = %integration,
                    file = %storage.count_location(integration),
                    error = %err,
                    "ignoring the stored count of Cost Explorer requests"
                ),
            }
        }
        let budget = Self {
            integration: integration.to_string(),
            clock,
            storage,
            metrics,
            state: Mutex::new(State {
                limit,
                day,
                used,
                reserved: used,
                refusals: 0,
                write_failing: false,
            }),
        };
        budget.publish(&lock(&budget.state));
        budget
    }

    /// Applies a reloaded `max_api_requests_per_day`; the day's count stays.
    pub fn set_limit(&self, limit: u64) {
        let mut state = lock(&self.state);
        state.limit = limit;
        self.publish(&state);
    }

    /// Takes one request from today's allowance, or refuses it.
    pub fn acquire(&self) -> Result<(), CapReached> {
        let today = (self.clock)().date_naive();
        let mut state = lock(&self.state);
        // A clock set back keeps counting against the later day.
        if today > state.day {
            state.day = today;
            state.used = 0;
            state.reserved = 0;
            self.publish(&state);
        }
        if state.used < state.limit && state.used >= state.reserved {
            // Reserved before the request goes out, so that a crash never under-counts.
            // A small file or object every RESERVE_BLOCK requests, on the refresh runtime.
            let own = state.used.saturating_add(RESERVE_BLOCK).min(state.limit);
            let reservation = match &self.storage {
                None => Ok(Reservation {
                    used: state.used,
                    reserved: own,
                }),
                Some(storage) => {
                    let (day, used, limit) = (state.day, state.used, state.limit);
                    storage.reserve_count(&self.integration, day, used, RESERVE_BLOCK, limit)
                }
            };
            match reservation {
                Ok(reservation) => {
                    state.write_failing = false;
                    state.used = reservation.used;
                    state.reserved = reservation.reserved;
                }
                Err(err) => {
                    // Shared by replicas, a count that cannot be read and replaced could be
                    // passed together: refuse until it can. Alone, go on counting.
                    let shared = self.storage.as_ref().is_some_and(|s| s.bucket().is_some());
                    if !state.write_failing
                        && let Some(storage) = &self.storage
                    {
                        if shared {
                            tracing::warn!(
                                integration = %self.integration,
                                file = %storage.count_location(&self.integration),
                                error = %err,
                                "cannot reserve Cost Explorer requests in the shared count; refusing requests until it can be written"
                            );
                        } else {
                            tracing::warn!(
                                integration = %self.integration,
                                file = %storage.count_location(&self.integration),
                                error = %err,
                                "cannot store the count of Cost Explorer requests; a restart today may under-count"
                            );
                        }
                    }
                    state.write_failing = true;
                    if shared {
                        state.refusals += 1;
                        return Err(CapReached { limit: state.limit });
                    }
                    state.reserved = own;
                }
            }
        }
        if state.used >= state.limit {
            state.refusals += 1;
            self.publish(&state);
            return Err(CapReached { limit: state.limit });
        }
        state.used += 1;
        if state.used >= state.limit {
            self.publish(&state);
        }
        Ok(())
    }

    /// Sets `aws_cost_api_budget_exhausted`'s source: the day the allowance ran out, if it did.
    fn publish(&self, state: &State) {
        let exhausted = (state.used >= state.limit).then_some(state.day);
        self.metrics
            .record_api_budget_exhausted(&self.integration, exhausted);
    }

    /// Requests refused so far.
    pub fn refusals(&self) -> u64 {
        lock(&self.state).refusals
    }

    pub fn limit(&self) -> u64 {
        lock(&self.state).limit
    }

    /// Whether today's allowance is spent.
    pub fn exhausted(&self) -> bool {
        let today = (self.clock)().date_naive();
        let state = lock(&self.state);
        today <= state.day && state.used >= state.limit
    }

    /// Midnight UTC after the day counted: when the allowance starts again.
    pub fn next_day(&self) -> DateTime<Utc> {
        let day = lock(&self.state).day;
        day.succ_opt()
            .unwrap_or(day)
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or_else(|| (self.clock)())
    }
}

/// The Cost Explorer interceptor that applies an [`ApiBudget`] before every attempt.
#[derive(Debug, Clone)]
pub struct CapInterceptor(pub Arc<ApiBudget>);

impl Intercept for CapInterceptor {
    fn name(&self) -> &'static str {
        "aws-cost-exporter daily request cap"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.acquire().map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;
    use std::sync::atomic::{AtomicI64, Ordering};

    fn clock_at(millis: &Arc<AtomicI64>) -> Clock {
        let millis = millis.clone();
        Arc::new(move || {
            DateTime::from_timestamp_millis(millis.load(Ordering::SeqCst)).unwrap_or_default()
        })
    }

    /// The UTC day counted and the requests let through that day.
    fn counted(budget: &ApiBudget) -> (u32, u64) {
        use chrono::Datelike as _;
        let state = lock(&budget.state);
        (state.day.day(), state.used)
    }

    fn noon(day: u32) -> i64 {
        Utc.with_ymd_and_hms(2026, 11, day, 12, 0, 0)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn the_cap_holds_until_the_next_utc_day() {
        let now = Arc::new(AtomicI64::new(noon(23)));
        let metrics = Arc::new(Metrics::with_clock(clock_at(&now)));
        let budget = ApiBudget::new("payer", 3, clock_at(&now), None, metrics.clone());
        let exhausted = || {
            let text = metrics.encode(crate::exposition::Format::Classic);
            text.lines()
                .find(|l| l.starts_with("aws_cost_api_budget_exhausted{"))
                .map(str::to_string)
        };
        assert_eq!(
            exhausted().as_deref(),
            Some("aws_cost_api_budget_exhausted{integration=\"payer\"} 0")
        );
        for _ in 0..3 {
            assert_eq!(budget.acquire(), Ok(()));
        }
        assert!(budget.exhausted());
        assert_eq!(
            exhausted().as_deref(),
            Some("aws_cost_api_budget_exhausted{integration=\"payer\"} 1")
        );
        assert_eq!(budget.acquire(), Err(CapReached { limit: 3 }));
        assert_eq!(budget.acquire(), Err(CapReached { limit: 3 }));
        assert_eq!((counted(&budget), budget.refusals()), ((23, 3), 2));
        assert_eq!(
            budget.next_day(),
            Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 0).unwrap()
        );
        // A raised cap lets more through the same day.
        budget.set_limit(4);
        assert_eq!(
            exhausted().as_deref(),
            Some("aws_cost_api_budget_exhausted{integration=\"payer\"} 0")
        );
        assert_eq!(budget.acquire(), Ok(()));
        assert_eq!(budget.acquire(), Err(CapReached { limit: 4 }));
        // The next UTC day: the gauge turns 0 at scrape time, before any request.
        now.store(
            Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 1)
                .unwrap()
                .timestamp_millis(),
            Ordering::SeqCst,
        );
        assert_eq!(
            exhausted().as_deref(),
            Some("aws_cost_api_budget_exhausted{integration=\"payer\"} 0")
        );
        assert!(!budget.exhausted());
        assert_eq!(budget.acquire(), Ok(()));
        assert_eq!(counted(&budget), (24, 1), "the new day counts from zero");
        // A clock set back a day does not reset the count.
        now.store(noon(23), Ordering::SeqCst);
        assert_eq!(budget.acquire(), Ok(()));
        assert_eq!(counted(&budget), (24, 2));
    }

    #[test]
    fn the_count_is_reserved_on_disk_before_requests() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let now = Arc::new(AtomicI64::new(noon(23)));
        let metrics = Arc::new(Metrics::new());
        let today = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let budget = ApiBudget::new(
            "payer",
            50,
            clock_at(&now),
            Some(storage.clone()),
            metrics.clone(),
        );
        assert_eq!(storage.load_count("payer").unwrap(), None);
        budget.acquire().unwrap();
        assert_eq!(
            storage.load_count("payer").unwrap(),
            Some((today, RESERVE_BLOCK))
        );
        for _ in 1..RESERVE_BLOCK + 1 {
            budget.acquire().unwrap();
        }
        assert_eq!(
            storage.load_count("payer").unwrap(),
            Some((today, 2 * RESERVE_BLOCK)),
            "the 21st request reserved the next block first"
        );
        // A restart (a crash) the same day starts from what was reserved: never fewer.
        let restarted = ApiBudget::new(
            "payer",
            50,
            clock_at(&now),
            Some(storage.clone()),
            metrics.clone(),
        );
        assert_eq!(counted(&restarted), (23, 2 * RESERVE_BLOCK));
        for _ in 0..50 - 2 * RESERVE_BLOCK {
            restarted.acquire().unwrap();
        }
        assert_eq!(restarted.acquire(), Err(CapReached { limit: 50 }));
        assert_eq!(storage.load_count("payer").unwrap(), Some((today, 50)));
        // A crash loop: each restart stays refused.
        let again = ApiBudget::new("payer", 50, clock_at(&now), Some(storage.clone()), metrics);
        assert!(again.exhausted());
        assert_eq!(again.acquire(), Err(CapReached { limit: 50 }));
        // The next day starts from zero.
        now.store(noon(24), Ordering::SeqCst);
        let tomorrow = ApiBudget::new(
            "payer",
            50,
            clock_at(&now),
            Some(storage),
            Arc::new(Metrics::new()),
        );
        assert_eq!(counted(&tomorrow), (24, 0));
        assert_eq!(tomorrow.acquire(), Ok(()));
    }
}
