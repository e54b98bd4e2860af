//! Leases on shared storage (`--storage.path s3://…`): many replicas, one bill, one view.
//!
//! Each integration has one lease, an object in the bucket (`lease-<name>.bin`) that names its
//! holder and is only ever written conditionally: created with `If-None-Match: *`, renewed,
//! released or taken over with `If-Match` on the version read. Of two replicas writing at once,
//! one wins and the other gets 412 and writes nothing. The holder runs the integration's
//! refreshes (all its parts) and writes its records; every replica serves every integration from
//! the latest records, polling them with their ETag (a 304 costs nothing but the request), so
//! that all replicas serve the same cost lines.
//!
//! Time, without trusting clocks to agree: a lease carries no expiry time. A follower counts a
//! lease expired when it has seen the same version of it, unchanged, for a whole lease duration
//! on its own monotonic clock ([`LeaseOptions::duration`]). The holder renews every quarter of
//! the duration, and stops refreshing three quarters of the duration after it *sent* its last
//! successful renewal, before any follower can count the lease expired (a follower first sees
//! that version after it was written, so later). Wall clocks may disagree by any amount; only
//! their rates matter, and the last quarter is the margin. Records are written whole or not at
//! all (S3 has no partial objects): a reader never sees half of one.
//!
//! What can happen:
//! - The holder dies (SIGKILL, node lost): a follower takes over within the lease duration and
//!   one poll interval, starting from the last records written. If the holder died during a
//!   refresh, that refresh is bought again: at most one refresh twice per takeover.
//! - The holder cannot reach S3: it cannot renew, stops refreshing three quarters of a duration
//!   after its last renewal, and keeps serving what it last had
//!   (`aws_cost_exporter_records_age_seconds` grows); another replica takes over.
//! - A follower cannot reach S3: it serves what it last read, and says so in the same way.
//! - A renewal is lost (412): someone else holds the lease; the replica stops at once.
//! - A holder's write in flight when it stops may land after it stopped: a whole record, older
//!   than the next holder's first one.
//!
//! Balancing: every replica writes a sign of life (`replicas/<id>.bin`) every quarter of a lease
//! duration and lists the others'; a replica is live while its object keeps changing (within a
//! lease duration, on the reader's clock). With M integrations and N live replicas, a replica takes a
//! free or expired lease only while it holds fewer than ⌈M/N⌉, and releases one (after its
//! refresh stops) while it holds more, so that the refresh work spreads by itself. A lease that
//! stays free for two poll intervals is taken by any replica that sees it: being refreshed
//! matters more than balance.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::storage::s3::{Bucket, Condition, Fetched, Written};
use crate::storage::{KIND_LEASE, KIND_REPLICA, LoadError, Reader, Writer, file_name_part};

/// How long a lease lasts without renewal, by default (`--storage.lease-duration`).
pub const LEASE_DURATION: Duration = Duration::from_secs(120);
/// How often followers poll leases and records, and replicas sign life, by default
/// (`--storage.poll-interval`).
pub const POLL_INTERVAL: Duration = Duration::from_secs(10);
/// The format version of lease and replica objects.
const VERSION: u32 = 1;
/// Where replicas sign life, under the prefix.
const REPLICAS: &str = "replicas/";

/// The timing of leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseOptions {
    /// How long a lease lasts without renewal.
    pub duration: Duration,
    /// How often followers poll leases and records.
    pub poll_interval: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        Self {
            duration: LEASE_DURATION,
            poll_interval: POLL_INTERVAL,
        }
    }
}

impl LeaseOptions {
    /// Checks that the holder has time to renew before followers may take over.
    pub fn validate(&self) -> Result<(), String> {
        if self.duration < Duration::from_secs(1) {
            return Err("--storage.lease-duration must be at least 1s".into());
        }
        if self.poll_interval.is_zero() || self.poll_interval > self.duration / 2 {
            return Err(format!(
                "--storage.poll-interval must be more than 0s and at most half of --storage.lease-duration ({})",
                humantime::format_duration(self.duration)
            ));
        }
        Ok(())
    }

    fn renew_every(&self) -> Duration {
        self.duration / 4
    }

    /// How long after sending its last successful renewal the holder goes on refreshing.
    fn hold_for(&self) -> Duration {
        self.duration * 3 / 4
    }

    /// The longest an S3 request may take, its retry included: within the last quarter of a lease,
    /// so that a holder's write in flight when it stops lands before another can take over.
    pub fn attempt_timeout(&self) -> Duration {
        (self.duration / 8).clamp(Duration::from_millis(500), Duration::from_secs(10))
    }
}

/// What a lease object says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lease {
    /// The replica holding it; empty when released.
    holder: String,
    /// Counts writes, so that every write has new bytes (and a new ETag).
    sequence: u64,
    /// The holder's lease duration, in milliseconds: a follower waits the longer of its own
    /// and this.
    duration_ms: u64,
}

impl Lease {
    fn encode(&self, integration: &str) -> Vec<u8> {
        let mut w = Writer::new(KIND_LEASE, VERSION);
        w.str(integration);
        w.str(&self.holder);
        w.u64(self.sequence);
        w.u64(self.duration_ms);
        w.finish()
    }

    fn decode(bytes: &[u8], integration: &str) -> Result<Self, LoadError> {
        let mut r = Reader::open(bytes, KIND_LEASE, VERSION)?;
        let name = r.str()?;
        if name != integration {
            return Err(LoadError::OtherIntegration(name.to_string()));
        }
        let lease = Lease {
            holder: r.str()?.to_string(),
            sequence: r.u64()?,
            duration_ms: r.u64()?,
        };
        r.end()?;
        Ok(lease)
    }
}

/// The name of an integration's lease object.
pub fn lease_name(integration: &str) -> String {
    format!("lease-{}.bin", file_name_part(integration))
}

/// This replica, as the leases of all its integrations see it: its id, how many leases it
/// holds, and how many replicas are live.
pub struct Replica {
    id: String,
    bucket: Arc<Bucket>,
    options: LeaseOptions,
    held: AtomicUsize,
    integrations: AtomicUsize,
    live: AtomicUsize,
    /// Rounds of signing life and listing done.
    rounds: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.id)
            .field("held", &self.held)
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

impl Replica {
    pub fn new(id: String, bucket: Arc<Bucket>, options: LeaseOptions) -> Arc<Self> {
        Arc::new(Self {
            id,
            bucket,
            options,
            held: AtomicUsize::new(0),
            integrations: AtomicUsize::new(0),
            live: AtomicUsize::new(1),
            rounds: tokio::sync::watch::Sender::new(0),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// How many integrations the replica serves (on start and reload).
    pub fn set_integrations(&self, count: usize) {
        self.integrations.store(count, Ordering::Relaxed);
    }

    /// How many leases it holds now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// How many replicas it counts as live, itself included.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Its fair share of the leases: ⌈M/N⌉.
    fn share(&self) -> usize {
        let integrations = self.integrations.load(Ordering::Relaxed).max(1);
        integrations.div_ceil(self.live().max(1))
    }

    fn may_take(&self) -> bool {
        self.held() < self.share()
    }

    /// Claims the release of one lease when it holds more than its share: true for one caller
    /// per lease over the share (its count is already lowered).
    fn claim_release(&self) -> bool {
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                (held > self.share()).then(|| held - 1)
            })
            .is_ok()
    }

    fn object_name(&self) -> String {
        format!("{REPLICAS}{}.bin", file_name_part(&self.id))
    }

    /// Until the first round of signing life is done, or `shutdown`.
    async fn ready(&self, shutdown: &CancellationToken) {
        let mut rounds = self.rounds.subscribe();
        tokio::select! {
            _ = rounds.wait_for(|rounds| *rounds >= 1) => {}
            _ = shutdown.cancelled() => {}
        }
    }

    /// Signs life and counts live replicas every quarter of a lease duration, until `shutdown`;
    /// then removes its sign of life, so that the others count one replica fewer at once.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let name = self.object_name();
        // Per other replica's object: its ETag, when it was first seen, when it last changed.
        let mut seen: HashMap<String, (String, Instant, Option<Instant>)> = HashMap::new();
        let mut sequence = 0u64;
        let mut failing = false;
        loop {
            sequence += 1;
            let mut w = Writer::new(KIND_REPLICA, VERSION);
            w.str(&self.id);
            w.u64(sequence);
            w.u64(self.held() as u64);
            let result = match self.bucket.put(&name, w.finish(), Condition::Any).await {
                Ok(_) => self.bucket.list(REPLICAS).await,
                Err(err) => Err(err),
            };
            match result {
                Ok(objects) => {
                    failing = false;
                    let now = Instant::now();
                    let mut live = 1;
                    let mut present = std::collections::HashSet::new();
                    for (object, etag) in objects {
                        if object == name {
                            continue;
                        }
                        present.insert(object.clone());
                        let entry = seen
                            .entry(object.clone())
                            .or_insert((etag.clone(), now, None));
                        if entry.0 != etag {
                            entry.0 = etag;
                            entry.2 = Some(now);
                        }
                        if entry.2.is_some_and(|at| now - at < self.options.duration) {
                            live += 1;
                        } else if now - entry.2.unwrap_or(entry.1) > self.options.duration * 10 {
                            // A replica gone long ago (a deleted pod): its sign goes.
                            let _ = self.bucket.delete(&object).await;
                        }
                    }
                    seen.retain(|object, _| present.contains(object));
                    self.live.store(live, Ordering::Relaxed);
                }
                Err(err) => {
                    if !failing {
                        tracing::warn!(
                            replica = %self.id,
                            error = %err,
                            "cannot sign life in shared storage; counting the other replicas as before"
                        );
                    }
                    failing = true;
                }
            }
            self.rounds.send_modify(|rounds| *rounds += 1);
            tokio::select! {
                _ = tokio::time::sleep(self.options.renew_every()) => {}
                _ = shutdown.cancelled() => {
                    let _ = self.bucket.delete(&name).await;
                    return;
                }
            }
        }
    }
}

/// What a replica does for an integration, holding its lease or not (the refresh module's
/// `Turns`).
pub trait Duty: Send {
    /// Serves the latest records in storage if they changed since it last read them; false when
    /// storage could not be read.
    fn follow(&mut self) -> impl Future<Output = bool> + Send;
    /// Starts refreshing: this replica holds the lease.
    fn lead(&mut self);
    /// Stops refreshing, its request in flight aborted.
    fn stop(&mut self) -> impl Future<Output = ()> + Send;
    /// Whether a refresh is in flight (a lease is not released then: that would buy it twice).
    fn busy(&self) -> bool;
}

/// One integration's lease on this replica: follows (its duty serves the records the holder
/// writes) or holds (its duty refreshes), and moves between the two.
pub struct Coordinator<D> {
    pub integration: String,
    pub bucket: Arc<Bucket>,
    pub replica: Arc<Replica>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub duty: D,
}

/// The lease as this replica last read it.
struct Seen {
    etag: String,
    lease: Option<Lease>,
    /// When this version was first seen.
    since: Instant,
}

/// The lease, held.
struct Held {
    etag: String,
    sequence: u64,
    /// When the last successful renewal (or the taking) was sent.
    renewed: Instant,
    /// When to try renewing next.
    next_try: Instant,
}

impl<D: Duty> Coordinator<D> {
    fn name(&self) -> &str {
        &self.integration
    }

    fn confirmed(&self) {
        self.metrics
            .record_records_confirmed(self.name(), (self.clock)());
    }

    /// Follows or holds until `shutdown`; then stops refreshing and releases the lease, so that
    /// another replica takes over at once.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let bucket = self.bucket.clone();
        let lease = lease_name(self.name());
        let options = self.replica.options;
        self.metrics.record_lease_held(self.name(), false);
        let mut lease_failing = false;
        let mut seen: Option<Seen> = None;
        // Since when the lease was seen free or expired.
        let mut free_since: Option<Instant> = None;
        let mut held: Option<Held> = None;
        self.follow().await;
        self.replica.ready(&shutdown).await;
        while !shutdown.is_cancelled() {
            if let Some(holding) = &mut held {
                let deadline = holding.renewed + options.hold_for();
                tokio::select! {
                    _ = tokio::time::sleep_until(holding.next_try.min(deadline)) => {}
                    _ = shutdown.cancelled() => break,
                }
                // Never in the middle of a refresh: that would buy it twice.
                if !self.duty.busy() && self.replica.claim_release() {
                    let holding = held.take();
                    self.stop_refreshing(holding, &bucket, &lease, true, false)
                        .await;
                    tracing::info!(integration = %self.name(), live_replicas = self.replica.live(), "lease released to balance the replicas' work");
                    seen = None;
                    continue;
                }
                if Instant::now() >= deadline {
                    tracing::warn!(integration = %self.name(), "cannot renew the lease in time; stopping refreshes, serving the last records");
                    let holding = held.take();
                    self.stop_refreshing(holding, &bucket, &lease, false, true)
                        .await;
                    seen = None;
                    continue;
                }
                let sent = Instant::now();
                let body = Lease {
                    holder: self.replica.id.clone(),
                    sequence: holding.sequence + 1,
                    duration_ms: options.duration.as_millis() as u64,
                };
                // Never past the deadline: a renewal that has not succeeded by then is lost.
                let renewal = bucket.put(
                    &lease,
                    body.encode(self.name()),
                    Condition::Matches(&holding.etag),
                );
                let result = tokio::time::timeout_at(deadline, renewal)
                    .await
                    .unwrap_or_else(|_| {
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the renewal did not finish before the lease's deadline",
                        ))
                    });
                match result {
                    Ok(Written::Done { etag }) => {
                        holding.etag = etag;
                        holding.sequence += 1;
                        holding.renewed = sent;
                        holding.next_try = sent + options.renew_every();
                        lease_failing = false;
                        self.confirmed();
                    }
                    Ok(Written::Conflict) => {
                        tracing::warn!(integration = %self.name(), "lease lost to another replica; stopping refreshes");
                        let holding = held.take();
                        self.stop_refreshing(holding, &bucket, &lease, false, true)
                            .await;
                        seen = None;
                    }
                    Err(err) => {
                        if !lease_failing {
                            tracing::warn!(integration = %self.name(), error = %err, "cannot renew the lease; retrying");
                        }
                        lease_failing = true;
                        holding.next_try = Instant::now()
                            + (options.renew_every() / 4).max(Duration::from_millis(50));
                    }
                }
                continue;
            }

            // Following. The lease first, timed from when it was asked for (a version seen
            // was written before the answer), then the records (written before any release).
            let now = Instant::now();
            let known = seen.as_ref().map(|s| s.etag.clone());
            let read = bucket.get(&lease, known.as_deref()).await;
            self.follow().await;
            match read {
                Ok(Fetched::Unchanged) => lease_failing = false,
                Ok(Fetched::Missing) => {
                    lease_failing = false;
                    seen = None;
                }
                Ok(Fetched::Found { bytes, etag }) => {
                    lease_failing = false;
                    let lease = Lease::decode(&bytes, self.name()).ok();
                    seen = Some(Seen {
                        etag,
                        lease,
                        since: now,
                    });
                }
                Err(err) => {
                    if !lease_failing {
                        tracing::warn!(integration = %self.name(), error = %err, "cannot read the lease; serving the last records");
                    }
                    lease_failing = true;
                }
            }
            let mut wait = options.poll_interval;
            if !lease_failing {
                // Free: none, released, unreadable, or unchanged for a whole duration.
                let expires = seen.as_ref().map(|s| match &s.lease {
                    Some(lease) if !lease.holder.is_empty() => {
                        let theirs = Duration::from_millis(lease.duration_ms);
                        s.since + options.duration.max(theirs)
                    }
                    _ => s.since,
                });
                let free = expires.is_none_or(|at| now >= at);
                if free {
                    let since = *free_since.get_or_insert(now);
                    let starved = now - since >= options.poll_interval * 2;
                    if self.replica.may_take() || starved {
                        match self.take(&bucket, &lease, seen.as_ref()).await {
                            Ok(Some(holding)) => {
                                held = Some(holding);
                                free_since = None;
                                continue;
                            }
                            Ok(None) => seen = None,
                            Err(err) => {
                                tracing::warn!(integration = %self.name(), error = %err, "cannot take the lease");
                            }
                        }
                    }
                } else {
                    free_since = None;
                    // Wake when it would expire, rather than a poll later.
                    if let Some(at) = expires {
                        wait = wait.min(at.saturating_duration_since(now));
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        if let Some(holding) = held.take() {
            self.stop_refreshing(Some(holding), &bucket, &lease, true, true)
                .await;
        }
    }

    /// Serves the records in storage, if they changed (only followers read records; the holder
    /// writes them).
    async fn follow(&mut self) {
        if self.duty.follow().await {
            self.confirmed();
        }
    }

    /// Tries to take the lease, free or expired as `seen`: `Ok(None)` when another replica was
    /// quicker.
    async fn take(
        &mut self,
        bucket: &Bucket,
        lease: &str,
        seen: Option<&Seen>,
    ) -> std::io::Result<Option<Held>> {
        let previous = seen.and_then(|s| s.lease.as_ref());
        let body = Lease {
            holder: self.replica.id.clone(),
            sequence: previous.map_or(0, |l| l.sequence) + 1,
            duration_ms: self.replica.options.duration.as_millis() as u64,
        };
        let condition = match seen {
            Some(seen) => Condition::Matches(&seen.etag),
            None => Condition::Absent,
        };
        let sent = Instant::now();
        let etag = match bucket
            .put(lease, body.encode(self.name()), condition)
            .await?
        {
            Written::Done { etag } => etag,
            Written::Conflict => return Ok(None),
        };
        self.replica.held.fetch_add(1, Ordering::Relaxed);
        let takeover = previous.is_some_and(|l| !l.holder.is_empty());
        if takeover {
            self.metrics.record_takeover(self.name());
        }
        self.metrics.record_lease_held(self.name(), true);
        self.confirmed();
        tracing::info!(
            integration = %self.name(),
            replica = %self.replica.id,
            previous_holder = previous.map(|l| l.holder.as_str()).filter(|h| !h.is_empty()),
            "lease taken; refreshing this integration"
        );
        self.duty.lead();
        Ok(Some(Held {
            etag,
            sequence: body.sequence,
            renewed: sent,
            next_try: sent + self.replica.options.renew_every(),
        }))
    }

    /// Stops the refresher (its request in flight aborted); with `release`, writes the lease
    /// free. `count` lowers the replica's count of leases held (a release claimed lowered it).
    async fn stop_refreshing(
        &mut self,
        holding: Option<Held>,
        bucket: &Bucket,
        lease: &str,
        release: bool,
        count: bool,
    ) {
        let Some(holding) = holding else {
            return;
        };
        self.duty.stop().await;
        if count {
            self.replica.held.fetch_sub(1, Ordering::Relaxed);
        }
        self.metrics.record_lease_held(self.name(), false);
        if release {
            let body = Lease {
                holder: String::new(),
                sequence: holding.sequence + 1,
                duration_ms: self.replica.options.duration.as_millis() as u64,
            };
            if let Err(err) = bucket
                .put(
                    lease,
                    body.encode(self.name()),
                    Condition::Matches(&holding.etag),
                )
                .await
            {
                tracing::warn!(integration = %self.name(), error = %err, "cannot release the lease; it expires instead");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_round_trip_and_name_their_integration() {
        let lease = Lease {
            holder: "pod-a".into(),
            sequence: 7,
            duration_ms: 120_000,
        };
        let bytes = lease.encode("payer");
        assert_eq!(Lease::decode(&bytes, "payer").unwrap(), lease);
        assert!(matches!(
            Lease::decode(&bytes, "other"),
            Err(LoadError::OtherIntegration(name)) if name == "payer"
        ));
        let mut corrupt = bytes.clone();
        corrupt[20] ^= 1;
        assert!(Lease::decode(&corrupt, "payer").is_err());
    }

    #[test]
    fn the_holder_stops_before_a_follower_may_take_over() {
        let options = LeaseOptions::default();
        assert!(options.renew_every() * 3 <= options.hold_for());
        assert!(options.hold_for() + options.attempt_timeout() < options.duration);
        assert!(options.validate().is_ok());
        let short = LeaseOptions {
            duration: Duration::from_secs(2),
            poll_interval: Duration::from_millis(200),
        };
        assert!(short.hold_for() + short.attempt_timeout() <= short.duration);
        assert!(
            LeaseOptions {
                poll_interval: Duration::from_secs(90),
                ..options
            }
            .validate()
            .unwrap_err()
            .contains("at most half")
        );
    }
}
