//! `--storage.path s3://…`: replicas share records and leases in S3 (the simulated S3 on
//! 127.0.0.1, reached through the real AWS SDK), so that N replicas buy each refresh once and
//! serve the same cost lines; a holder that dies or loses S3 is replaced; the daily cap is
//! shared.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_cost_exporter::lease::LeaseOptions;
use aws_cost_exporter::storage::{Location, S3Options, Storage};
use aws_cost_exporter::{Exporter, ExporterOptions, SharedStorage};
use aws_cost_simulator::s3::S3Simulator;
use aws_cost_simulator::{Behavior, Simulator};
use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone as _, Utc};
use common::proxy::Proxy;
use common::running::Running;
use common::*;
use tokio::time::Instant;

const BUCKET: &str = "ha-records";
const S3_KEY: (&str, &str) = (
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
);
const LEASE: LeaseOptions = LeaseOptions {
    duration: Duration::from_secs(2),
    poll_interval: Duration::from_millis(200),
};

fn noon(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(12, 0, 0).unwrap())
}

/// Integrations on the organization's payer account, with `extra` settings each.
fn yaml(sim: &Simulator, names: &[&str], top: &str, extra: &str) -> String {
    let mut text = format!("{top}integrations:\n");
    for name in names {
        text.push_str(&format!(
            "  - name: {name}\n    account_id: \"111111111111\"\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {}\n{extra}",
            PAYER_KEY.0,
            PAYER_KEY.1,
            sim.endpoint()
        ));
    }
    text
}

fn shared(endpoint: &str, prefix: &str, id: &str) -> SharedStorage {
    SharedStorage {
        location: Location::parse(&format!("s3://{BUCKET}/{prefix}"))
            .unwrap()
            .unwrap(),
        s3: S3Options {
            endpoint_url: Some(endpoint.to_string()),
            region: Some("us-east-1".into()),
            credentials: Some(aws_credential_types::Credentials::new(
                S3_KEY.0, S3_KEY.1, None, None, "test",
            )),
            attempt_timeout: None,
        },
        lease: LEASE,
        replica_id: Some(id.to_string()),
    }
}

/// A replica on 127.0.0.1:0 sharing `prefix` in the simulated S3 at `endpoint`.
async fn replica(
    yaml: &str,
    clock: &TestClock,
    endpoint: &str,
    prefix: &str,
    id: &str,
) -> Exporter {
    start_on_clock_with(
        yaml,
        clock,
        ExporterOptions {
            refresh: test_refresh_options(),
            shared_storage: Some(shared(endpoint, prefix, id)),
            ..ExporterOptions::default()
        },
    )
    .await
}

/// The cost families of a page: everything from the first cost family on.
fn cost_lines(page: &str) -> Option<String> {
    page.find("# HELP aws_cost_daily_usd ")
        .map(|start| page[start..].to_string())
}

async fn page(addr: SocketAddr) -> String {
    get(addr, "/metrics").await.text()
}

/// `aws_cost_exporter_lease_held` per integration.
fn held(samples: &[Sample]) -> BTreeMap<String, f64> {
    samples
        .iter()
        .filter(|s| s.name == "aws_cost_exporter_lease_held")
        .map(|s| (s.label("integration").to_string(), s.value))
        .collect()
}

fn takeovers(samples: &[Sample], integration: &str) -> Option<f64> {
    value_of(
        samples,
        "aws_cost_exporter_lease_takeovers_total",
        &[("integration", integration)],
    )
}

/// Billed requests of one refresh of `names`, counted with one plain exporter (no storage) on
/// a simulator of its own with the same data.
async fn one_refresh(today: NaiveDate, names: &[&str], clock: &TestClock) -> usize {
    let sim = org_simulator(today, 500).await;
    let exporter = start_on_clock(&yaml(&sim, names, "refresh_interval: 6h\n", ""), clock).await;
    wait_for_refresh(exporter.local_addr(), names).await;
    let billed = sim.billed_requests();
    exporter.shutdown().await;
    billed
}

/// Polls until `predicate` holds for the replicas' pages (at most [`WAIT`]).
async fn until(
    what: &str,
    addrs: &[SocketAddr],
    predicate: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut pages = Vec::new();
        for addr in addrs {
            pages.push(page(*addr).await);
        }
        if predicate(&pages) {
            return pages;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until one of two replicas holds the payer's lease and both serve the same cost lines.
async fn one_holder_both_serving(addrs: &[SocketAddr; 2]) -> Vec<String> {
    until("one holder, both serving", addrs, |pages| {
        let held: f64 = pages
            .iter()
            .map(|p| held(&samples(p)).get("payer").copied().unwrap_or(0.0))
            .sum();
        held == 1.0
            && cost_lines(&pages[0]).is_some()
            && cost_lines(&pages[0]) == cost_lines(&pages[1])
    })
    .await
}

fn samples(page: &str) -> Vec<Sample> {
    parse_exposition(page)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_buy_each_refresh_once_and_serve_the_same_cost_lines() {
    let today = date(2026, 11, 23);
    let clock = TestClock::at(noon(today));
    let names = ["payer-a", "payer-b"];
    let one = one_refresh(today, &names, &clock).await;
    assert!(one > 0);

    let sim = org_simulator(today, 500).await;
    let s3 = S3Simulator::start(&[BUCKET]).await.unwrap();
    let config = yaml(&sim, &names, "refresh_interval: 6h\n", "");
    let a = replica(&config, &clock, &s3.endpoint(), "two", "replica-a").await;
    let b = replica(&config, &clock, &s3.endpoint(), "two", "replica-b").await;
    let addrs = [a.local_addr(), b.local_addr()];

    // Balanced (one lease each), and both serve the same cost lines of both integrations.
    let pages = until(
        "two replicas holding one lease each, serving the same",
        &addrs,
        |pages| {
            let [a, b] = [&pages[0], &pages[1]].map(|p| held(&samples(p)));
            let each_one =
                |h: &BTreeMap<String, f64>| h.values().sum::<f64>() == 1.0 && h.len() == 2;
            let lines = pages.iter().map(|p| cost_lines(p)).collect::<Vec<_>>();
            each_one(&a)
                && each_one(&b)
                && names.iter().all(|n| a[*n] + b[*n] == 1.0)
                && lines[0].is_some()
                && lines[0] == lines[1]
                && names.iter().all(|n| {
                    lines[0]
                        .as_ref()
                        .is_some_and(|l| l.contains(&format!("integration=\"{n}\"")))
                })
        },
    )
    .await;
    // One replica's bill: each integration refreshed once, by its holder.
    assert_eq!(sim.billed_requests(), one);
    for page in &pages {
        let samples = samples(page);
        for name in names {
            // A release to balance the work is no takeover.
            assert_eq!(takeovers(&samples, name), Some(0.0), "{page}");
            assert_eq!(
                value_of(
                    &samples,
                    "aws_cost_data_age_seconds",
                    &[("integration", name)]
                ),
                Some(0.0)
            );
        }
    }
    // The records, the counts, the leases and each replica's sign of life, under the prefix.
    let mut keys = s3.keys(BUCKET, "two/");
    keys.sort();
    assert_eq!(
        keys,
        [
            "two/api-requests-payer-a.bin",
            "two/api-requests-payer-b.bin",
            "two/lease-payer-a.bin",
            "two/lease-payer-b.bin",
            "two/replicas/replica-a.bin",
            "two/replicas/replica-b.bin",
            "two/snapshot-payer-a.bin",
            "two/snapshot-payer-b.bin",
        ]
    );

    // A third replica buys nothing: it serves the records, byte for byte, and holds no lease
    // while the others hold their share.
    let c = replica(&config, &clock, &s3.endpoint(), "two", "replica-c").await;
    let served = cost_lines(&pages[0]);
    until(
        "the third replica serving the records",
        &[c.local_addr()],
        |pages| cost_lines(&pages[0]) == served,
    )
    .await;
    tokio::time::sleep(LEASE.duration).await;
    let pages = until("all three", &[addrs[0], addrs[1], c.local_addr()], |_| true).await;
    let holders: Vec<f64> = pages
        .iter()
        .map(|p| held(&samples(p)).values().sum())
        .collect();
    assert_eq!(holders, [1.0, 1.0, 0.0]);
    assert_eq!(cost_lines(&pages[2]), served);
    assert_eq!(sim.billed_requests(), one);
    c.shutdown().await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_cut_off_from_s3_stops_and_another_takes_over() {
    let today = date(2026, 11, 23);
    let clock = TestClock::at(noon(today));
    let sim = org_simulator(today, 500).await;
    let s3 = S3Simulator::start(&[BUCKET]).await.unwrap();
    let target: SocketAddr = s3.endpoint().trim_start_matches("http://").parse().unwrap();
    let config = yaml(&sim, &["payer"], "refresh_interval: 6h\n", "");
    let proxies = [Proxy::start(target).await, Proxy::start(target).await];
    let a = replica(&config, &clock, &proxies[0].endpoint(), "cut", "replica-a").await;
    let b = replica(&config, &clock, &proxies[1].endpoint(), "cut", "replica-b").await;
    let addrs = [a.local_addr(), b.local_addr()];
    let pages = one_holder_both_serving(&addrs).await;
    let served = cost_lines(&pages[0]);
    let billed = sim.billed_requests();
    let holder = usize::from(held(&samples(&pages[1]))["payer"] == 1.0);
    let other = 1 - holder;

    proxies[holder].cut();
    let cut_at = Instant::now();
    // The other takes over, once the lease expired on its clock.
    let pages = until("the other replica holding the lease", &addrs, |pages| {
        held(&samples(&pages[other]))["payer"] == 1.0
    })
    .await;
    let took = cut_at.elapsed();
    eprintln!("taken over {took:?} after the holder was cut off from S3");
    assert!(
        took <= LEASE.duration + LEASE.poll_interval * 2 + Duration::from_millis(500),
        "taken over after {took:?}"
    );
    // The cut-off replica had stopped before: it no longer holds the lease.
    assert_eq!(held(&samples(&pages[holder]))["payer"], 0.0);
    assert_eq!(takeovers(&samples(&pages[other]), "payer"), Some(1.0));
    // Nothing bought again (the new holder serves the records; the next refresh is not due),
    // and both serve the same lines; the cut-off one says its records are getting old.
    tokio::time::sleep(LEASE.duration).await;
    assert_eq!(sim.billed_requests(), billed);
    for addr in addrs {
        assert_eq!(cost_lines(&page(addr).await), served);
    }
    // The records' age follows the exporter's clock: half a minute on, the cut-off replica's
    // records are that old; the other's were confirmed at its last poll.
    clock.set(noon(today) + TimeDelta::seconds(30));
    let records_age = |page: &str| {
        value_of(
            &samples(page),
            "aws_cost_exporter_records_age_seconds",
            &[("integration", "payer")],
        )
    };
    until(
        "the holder's records confirmed at its renewal",
        &[addrs[other]],
        |pages| records_age(&pages[0]) == Some(0.0),
    )
    .await;
    assert_eq!(records_age(&page(addrs[holder]).await), Some(30.0));
    // The next refresh is the new holder's; the cut-off replica serves its last records, and
    // its data gets old.
    clock.set(noon(today) + TimeDelta::hours(6) + TimeDelta::minutes(1));
    until("the new holder's refresh", &[addrs[other]], |pages| {
        value_of(
            &samples(&pages[0]),
            "aws_cost_data_age_seconds",
            &[("integration", "payer")],
        ) == Some(0.0)
    })
    .await;
    assert_eq!(sim.billed_requests(), 2 * billed);
    let cut_off = samples(&page(addrs[holder]).await);
    assert_eq!(
        value_of(
            &cut_off,
            "aws_cost_data_age_seconds",
            &[("integration", "payer")]
        ),
        Some(6.0 * 3600.0 + 60.0)
    );
    assert_eq!(cost_lines(&page(addrs[holder]).await), served);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_daily_cap_across_takeovers() {
    let today = date(2026, 11, 23);
    let start = Utc.from_utc_datetime(&today.and_hms_opt(0, 30, 0).unwrap());
    let clock = TestClock::at(start);
    let sim = org_simulator(today, 500).await;
    let s3 = S3Simulator::start(&[BUCKET]).await.unwrap();
    let target: SocketAddr = s3.endpoint().trim_start_matches("http://").parse().unwrap();
    const CAP: usize = 25;
    let config = yaml(
        &sim,
        &["payer"],
        "refresh_interval: 1h\n",
        &format!("    max_api_requests_per_day: {CAP}\n"),
    );
    let mut proxies = Vec::new();
    let mut replicas = Vec::new();
    for id in ["replica-a", "replica-b", "replica-c"] {
        let proxy = Proxy::start(target).await;
        replicas.push(replica(&config, &clock, &proxy.endpoint(), "cap", id).await);
        proxies.push(proxy);
    }
    let addrs: Vec<SocketAddr> = replicas.iter().map(Exporter::local_addr).collect();
    let mut cut = Vec::new();
    let mut hour = 0;
    // Refresh every hour of the day; after every second refresh, cut the holder off, so that
    // the lease moves to a replica whose own count is lower.
    while hour < 20 && sim.billed_requests() < CAP {
        let pages = until("a holder", &addrs, |pages| {
            pages
                .iter()
                .enumerate()
                .any(|(i, p)| !cut.contains(&i) && held(&samples(p)).get("payer") == Some(&1.0))
        })
        .await;
        let holder = pages
            .iter()
            .position(|p| held(&samples(p)).get("payer") == Some(&1.0))
            .unwrap();
        let before = sim.billed_requests();
        hour += 1;
        clock.set(start + TimeDelta::hours(hour) + TimeDelta::minutes(1));
        // Its refresh (or the cap's refusal).
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(sim.billed_requests() >= before);
        if hour % 2 == 0 && cut.len() < 2 {
            proxies[holder].cut();
            cut.push(holder);
        }
    }
    tokio::time::sleep(LEASE.duration).await;
    let billed = sim.billed_requests();
    assert!(
        billed <= CAP,
        "{billed} billed requests against a shared cap of {CAP}"
    );
    assert!(cut.len() == 2, "the lease moved twice");
    // The last holder says the cap is reached.
    let last = (0..3).find(|i| !cut.contains(i)).unwrap();
    let samples = samples(&page(addrs[last]).await);
    assert_eq!(
        value_of(
            &samples,
            "aws_cost_api_budget_exhausted",
            &[("integration", "payer")]
        ),
        Some(1.0),
        "billed {billed}"
    );
    for exporter in replicas {
        exporter.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_of_the_shared_count_never_overlap() {
    let s3 = S3Simulator::start(&[BUCKET]).await.unwrap();
    let day = date(2026, 11, 23);
    let mut storages = Vec::new();
    for _ in 0..3 {
        let location = Location::parse(&format!("s3://{BUCKET}/count"))
            .unwrap()
            .unwrap();
        storages.push(
            Storage::open_s3(location, &shared(&s3.endpoint(), "count", "x").s3)
                .await
                .unwrap(),
        );
    }
    // Three replicas reserving at once, each from its own count of 0: every block is new.
    let limit = 1_000;
    let blocks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for storage in storages {
        let blocks = blocks.clone();
        threads.push(tokio::task::spawn_blocking(move || {
            let mut used = 0;
            for _ in 0..5 {
                let reservation = storage
                    .reserve_count("payer", day, used, 20, limit)
                    .unwrap();
                blocks
                    .lock()
                    .unwrap()
                    .push((reservation.used, reservation.reserved));
                used = reservation.reserved;
            }
        }));
    }
    for thread in threads {
        thread.await.unwrap();
    }
    let mut blocks = blocks.lock().unwrap().clone();
    blocks.sort();
    assert_eq!(blocks.len(), 15);
    for pair in blocks.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "overlapping blocks {pair:?}");
    }
    assert_eq!(blocks.last().unwrap().1, 15 * 20);
    // Near the limit: the last block is cut at the limit, then nothing.
    let location = Location::parse(&format!("s3://{BUCKET}/count"))
        .unwrap()
        .unwrap();
    let storage = Storage::open_s3(location, &shared(&s3.endpoint(), "count", "x").s3)
        .await
        .unwrap();
    let result = tokio::task::spawn_blocking(move || {
        (
            storage.reserve_count("payer", day, 0, 20, 310).unwrap(),
            storage.reserve_count("payer", day, 0, 20, 310).unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!((result.0.used, result.0.reserved), (300, 310));
    assert_eq!((result.1.used, result.1.reserved), (310, 310));
}

/// The binary, twice, against the simulated S3 and Cost Explorer; the holder is killed with
/// SIGKILL in the middle of its first refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_killed_mid_refresh_is_replaced_and_no_scrape_fails() {
    let today = Utc::now().date_naive();
    let clock = TestClock::at(Utc::now());
    let one = one_refresh(today, &["payer"], &clock).await;
    let sim = org_simulator(today, 500).await;
    let s3 = S3Simulator::start(&[BUCKET]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        yaml(
            &sim,
            &["payer"],
            "refresh_interval: 6h\ncheck_interval: off\n",
            "",
        ),
    )
    .unwrap();
    let endpoint = s3.endpoint();
    let env = [
        ("AWS_ENDPOINT_URL_S3", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", S3_KEY.0),
        ("AWS_SECRET_ACCESS_KEY", S3_KEY.1),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let start = |id: &str| {
        Running::start_with_env(
            &[
                "--config.file",
                file.to_str().unwrap(),
                "--web.listen-address",
                "127.0.0.1:0",
                "--storage.path",
                &format!("s3://{BUCKET}/kill"),
                "--storage.lease-duration",
                "2s",
                "--storage.poll-interval",
                "200ms",
                "--storage.replica-id",
                id,
            ],
            &env,
        )
    };
    // Each Cost Explorer answer takes 300 ms: the refresh is long enough to die in.
    sim.set_behavior("111111111111", Behavior::Hang(Duration::from_millis(300)));
    let mut first = start("replica-a");
    let first_addr = first.address();
    first.wait_for_line(|l| l.contains("lease taken"));
    let mut second = start("replica-b");
    let second_addr = second.address();
    // (Its first refresh waits a random part of 5 s, as in production.)
    let deadline = Instant::now() + WAIT;
    while sim.billed_requests() < 2 {
        assert!(Instant::now() < deadline, "the holder never refreshed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        cost_lines(&page(first_addr).await),
        None,
        "still in its first refresh"
    );
    let _ = first.child.kill();
    let _ = first.child.wait();
    let killed_at = Instant::now();
    // (A request in flight at the kill is counted when the simulator answers it.)
    tokio::time::sleep(Duration::from_millis(400)).await;
    let bought_before = sim.billed_requests();
    assert!(
        bought_before > 0 && bought_before < one,
        "killed mid-refresh: {bought_before} of {one}"
    );

    // Scrape the survivor throughout: never a failure, never a partial page.
    let mut taken_after = None;
    let mut served = None;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let response = try_request(second_addr, http::Method::GET, "/metrics", &[])
            .await
            .expect("the survivor answers");
        assert_eq!(response.status, http::StatusCode::OK);
        let text = response.text();
        let samples = samples(&text);
        if taken_after.is_none() && held(&samples).get("payer") == Some(&1.0) {
            taken_after = Some(killed_at.elapsed());
        }
        if let Some(lines) = cost_lines(&text) {
            served = Some(lines);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let taken_after = taken_after.expect("the survivor took the lease");
    eprintln!("taken over {taken_after:?} after the kill");
    assert!(
        taken_after <= LEASE.duration + LEASE.poll_interval + Duration::from_millis(700),
        "taken over {taken_after:?} after the kill"
    );
    let served = served.expect("the survivor serves the costs");
    // At most the one refresh bought twice: the killed one's part, and the survivor's whole.
    tokio::time::sleep(Duration::from_secs(1)).await;
    eprintln!(
        "billed: {bought_before} by the killed holder, {} by the survivor, {one} a refresh",
        sim.billed_requests() - bought_before
    );
    let billed = sim.billed_requests();
    assert!(
        (one..=bought_before + one).contains(&billed),
        "{billed} billed: at most the killed refresh's part and one whole refresh ({bought_before} + {one})"
    );
    // The records in S3 are whole: a third replica serves them, byte for byte.
    sim.set_behavior("111111111111", Behavior::Normal);
    let mut third = start("replica-c");
    let third_addr = third.address();
    let deadline = Instant::now() + WAIT;
    loop {
        if cost_lines(&page(third_addr).await).as_ref() == Some(&served) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the third replica did not serve the records"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sim.billed_requests(),
        billed,
        "the third replica bought nothing"
    );
    second.drain();
    third.drain();
}

/// Wall clocks an hour apart change nothing: leases are timed on each replica's own monotonic
/// clock, never by comparing wall clocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_whose_clocks_disagree_keep_one_holder_and_one_bill() {
    let today = date(2026, 11, 23);
    let behind = TestClock::at(noon(today));
    let ahead = TestClock::at(noon(today) + TimeDelta::hours(1));
    let one = one_refresh(today, &["payer"], &behind).await;
    let sim = org_simulator(today, 500).await;
    let s3 = S3Simulator::start(&[BUCKET]).await.unwrap();
    let config = yaml(&sim, &["payer"], "refresh_interval: 6h\n", "");
    let a = replica(&config, &behind, &s3.endpoint(), "skew", "replica-a").await;
    let b = replica(&config, &ahead, &s3.endpoint(), "skew", "replica-b").await;
    let addrs = [a.local_addr(), b.local_addr()];
    let pages = one_holder_both_serving(&addrs).await;
    let holder: Vec<f64> = pages.iter().map(|p| held(&samples(p))["payer"]).collect();
    // Three lease durations on: the same holder, no takeover, nothing bought again.
    tokio::time::sleep(LEASE.duration * 3).await;
    for (addr, was) in addrs.iter().zip(&holder) {
        let samples = samples(&page(*addr).await);
        assert_eq!(held(&samples)["payer"], *was);
        assert_eq!(takeovers(&samples, "payer"), Some(0.0));
    }
    assert_eq!(sim.billed_requests(), one);
    // Each serves the data's age by its own clock: an hour apart.
    let mut ages = Vec::new();
    for addr in addrs {
        let samples = samples(&page(addr).await);
        ages.push(
            value_of(
                &samples,
                "aws_cost_data_age_seconds",
                &[("integration", "payer")],
            )
            .unwrap(),
        );
    }
    assert_eq!(ages[1] - ages[0], 3600.0, "{ages:?}");
    a.shutdown().await;
    b.shutdown().await;
}
