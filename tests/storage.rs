//! `--storage.path` and `max_api_requests_per_day`: restarts serve the stored snapshot at once
//! and buy nothing before a refresh is due; bad files are ignored; the daily cap of billed
//! Cost Explorer requests holds within a refresh, across the day and across restarts. The
//! exporter runs on 127.0.0.1:0 against the simulated Cost Explorer through the real SDK,
//! with a clock the tests move.

mod common;

use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use aws_cost_exporter::api_budget::RESERVE_BLOCK;
use aws_cost_exporter::clock::CLOCK_POLL;
use aws_cost_exporter::config::Config;
use aws_cost_exporter::parts::PARTS;
use aws_cost_exporter::storage::SNAPSHOT_VERSION;
use aws_cost_exporter::{Exporter, ExporterOptions};
use aws_cost_simulator::{Behavior, DEMO_SCALE, Simulator, demo_simulator};
use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone as _, Utc};
use common::parts::*;
use common::*;

fn noon(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(12, 0, 0).unwrap())
}

/// The log lines that mention `integration=<name>` and contain `text`.
fn log_lines(name: &str, text: &str) -> Vec<String> {
    let mut lines = logs::integration_lines(name);
    lines.retain(|l| l.contains(text));
    lines
}

async fn start(config: Config, clock: &TestClock, storage: Option<&Path>) -> Exporter {
    logs::capture();
    Exporter::start(
        config,
        ExporterOptions {
            listen_address: "127.0.0.1:0".into(),
            telemetry_path: "/metrics".into(),
            clock: clock.clock(),
            storage_path: storage.map(Path::to_path_buf),
            refresh: test_refresh_options(),
            ..ExporterOptions::default()
        },
    )
    .await
    .expect("exporter starts")
}

/// One integration on the organization's payer account, with tags, two cost bases and a
/// budget: every kind of block a snapshot holds.
fn yaml(sim: &Simulator, name: &str, top: &str, extra: &str) -> Config {
    parse_config(&format!(
        "{top}integrations:\n  - name: {name}\n    account_id: \"111111111111\"\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {}\n    cost_basis: [unblended, amortized]\n    tags: [team]\n    budgets:\n      - name: all\n        monthly_usd: 50000\n      - name: production\n        monthly_usd: 9000\n        accounts: [\"333333333333\"]\n{extra}",
        PAYER_KEY.0,
        PAYER_KEY.1,
        sim.endpoint()
    ))
}

/// Requests the simulator billed (every Cost Explorer request it answered, of every billed
/// operation: the commitment and anomaly ones too).
fn billed(sim: &Simulator) -> usize {
    sim.billed_requests()
}

/// The cost families of a scrape (everything after the exporter's own metrics), in the
/// three ways a scrape can get them: text, gzip-decoded text, OpenMetrics.
async fn cost_bytes(exporter: &Exporter) -> [String; 3] {
    let addr = exporter.local_addr();
    let plain = get(addr, "/metrics").await.text();
    let gzip = request(
        addr,
        http::Method::GET,
        "/metrics",
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(gzip.headers["content-encoding"], "gzip");
    let mut decoded = String::new();
    flate2::read::GzDecoder::new(&gzip.body[..])
        .read_to_string(&mut decoded)
        .unwrap();
    let openmetrics = request(
        addr,
        http::Method::GET,
        "/metrics",
        &[("accept", "application/openmetrics-text; version=1.0.0")],
    )
    .await
    .text();
    [plain, decoded, openmetrics].map(|text| {
        let start = text
            .find("# HELP aws_cost_daily_usd ")
            .unwrap_or_else(|| panic!("no cost series in {text}"));
        text[start..].to_string()
    })
}

async fn scrape(exporter: &Exporter) -> Vec<Sample> {
    parse_exposition(&get(exporter.local_addr(), "/metrics").await.text())
}

fn gauge(samples: &[Sample], name: &str, integration: &str) -> Option<f64> {
    value_of(samples, name, &[("integration", integration)])
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Waits `CLOCK_POLL` twice over: long enough for a due wait to notice the clock. Used only
/// before asserting that something did NOT happen.
async fn let_the_scheduler_look() {
    tokio::time::sleep(CLOCK_POLL * 2 + Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_restart_serves_the_stored_snapshot_at_once_and_refreshes_when_due() {
    let today = date(2026, 11, 23);
    let sim = org_simulator(today, 500).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::at(noon(today));
    let config = || yaml(&sim, "restart", "refresh_interval: 6h\n", "");

    let first = start(config(), &clock, Some(dir.path())).await;
    let samples = wait_for_refresh(first.local_addr(), &["restart"]).await;
    assert_eq!(refresh_success(&samples, "restart"), Some(1.0));
    assert_eq!(
        gauge(&samples, "aws_cost_data_age_seconds", "restart"),
        Some(0.0)
    );
    let before = cost_bytes(&first).await;
    assert!(before[0].contains("aws_cost_tag_daily_usd{"));
    assert!(before[0].contains("aws_cost_budget_month_forecast_usd{"));
    let requests = billed(&sim);
    assert!(requests > 0);
    first.shutdown().await;
    // The snapshot and the request count, and no temporary file.
    assert_eq!(
        files(dir.path()),
        vec!["api-requests-restart.bin", "snapshot-restart.bin"]
    );

    // An hour later: served at once, byte for byte, with its true age, and no request.
    clock.set(noon(today) + TimeDelta::hours(1));
    let second = start(config(), &clock, Some(dir.path())).await;
    assert_eq!(cost_bytes(&second).await, before);
    let samples = scrape(&second).await;
    assert_eq!(
        gauge(&samples, "aws_cost_data_age_seconds", "restart"),
        Some(3600.0)
    );
    assert_eq!(refresh_success(&samples, "restart"), None, "no refresh yet");
    assert_eq!(billed(&sim), requests, "no request at start");
    assert_eq!(
        log_lines("restart", "serving the stored snapshot").len(),
        1,
        "{:?}",
        log_lines("restart", "")
    );

    // A second before the refresh is due: still nothing.
    clock.set(noon(today) + TimeDelta::hours(6) - TimeDelta::seconds(1));
    let_the_scheduler_look().await;
    assert_eq!(billed(&sim), requests);
    assert_eq!(
        gauge(
            &scrape(&second).await,
            "aws_cost_data_age_seconds",
            "restart"
        ),
        Some(6.0 * 3600.0 - 1.0)
    );

    // Due: it refreshes, buying the same requests as a refresh at start.
    clock.set(noon(today) + TimeDelta::hours(6));
    let samples = wait_for_refresh(second.local_addr(), &["restart"]).await;
    assert_eq!(refresh_success(&samples, "restart"), Some(1.0));
    assert_eq!(billed(&sim), 2 * requests);
    assert_eq!(
        gauge(&samples, "aws_cost_data_age_seconds", "restart"),
        Some(0.0)
    );
    assert_eq!(cost_bytes(&second).await, before, "the same day's data");
    second.shutdown().await;
    assert_eq!(
        files(dir.path()),
        vec!["api-requests-restart.bin", "snapshot-restart.bin"]
    );
}

#[tokio::test]
async fn a_stored_snapshot_older_than_the_interval_is_refreshed_at_once() {
    let today = date(2026, 11, 23);
    let sim = org_simulator(today, 500).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::at(noon(today) - TimeDelta::hours(8));
    let config = || yaml(&sim, "stale", "refresh_interval: 6h\n", "");
    let first = start(config(), &clock, Some(dir.path())).await;
    wait_for_refresh(first.local_addr(), &["stale"]).await;
    let before = cost_bytes(&first).await;
    let requests = billed(&sim);
    first.shutdown().await;

    clock.set(noon(today));
    let second = start(config(), &clock, Some(dir.path())).await;
    let samples = wait_for_refresh(second.local_addr(), &["stale"]).await;
    assert_eq!(refresh_success(&samples, "stale"), Some(1.0));
    assert_eq!(billed(&sim), 2 * requests);
    assert_eq!(
        gauge(&samples, "aws_cost_data_age_seconds", "stale"),
        Some(0.0)
    );
    assert_eq!(cost_bytes(&second).await, before);
    second.shutdown().await;
}

#[tokio::test]
async fn bad_stored_files_are_ignored_with_one_log_line() {
    let today = date(2026, 11, 23);
    let sim = org_simulator(today, 500).await;
    let clock = TestClock::at(noon(today));
    let top = "refresh_interval: 6h\n";
    // A good file of integration `good`, written by a first run.
    let source = tempfile::tempdir().unwrap();
    let first = start(yaml(&sim, "good", top, ""), &clock, Some(source.path())).await;
    wait_for_refresh(first.local_addr(), &["good"]).await;
    let expected = cost_bytes(&first).await;
    let requests = billed(&sim);
    first.shutdown().await;
    let good = std::fs::read(source.path().join("snapshot-good.bin")).unwrap();

    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x01;
    let mut version = good.clone();
    version[8] = version[8].wrapping_add(1);
    // (name, file contents, extra config, the reason logged)
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("corrupt", flipped, "", "checksum"),
        ("truncated", good[..good.len() - 7].to_vec(), "", "checksum"),
        ("empty", Vec::new(), "", "truncated"),
        ("version", version, "", "format version"),
        // A file the previous release (format version 2, one fingerprint for the whole
        // integration) wrote: refused, and the integration refreshes.
        (
            "previous",
            include_bytes!("fixtures/snapshot-v2-workload.bin").to_vec(),
            "",
            "it has format version 2; this exporter reads version 3",
        ),
        (
            "foreign",
            good.clone(),
            "",
            "written for integration \\\"good\\\"",
        ),
    ];
    for (name, contents, extra, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("snapshot-{name}.bin")), contents).unwrap();
        let before = billed(&sim);
        let exporter = start(yaml(&sim, name, top, extra), &clock, Some(dir.path())).await;
        let samples = wait_for_refresh(exporter.local_addr(), &[name]).await;
        assert_eq!(refresh_success(&samples, name), Some(1.0), "{name}");
        assert_eq!(
            billed(&sim) - before,
            requests,
            "{name}: a normal first refresh"
        );
        assert_eq!(
            cost_bytes(&exporter).await,
            expected
                .clone()
                .map(|t| t.replace("integration=\"good\"", &format!("integration=\"{name}\""))),
            "{name}"
        );
        exporter.shutdown().await;
        let lines = log_lines(name, "ignoring the stored snapshot");
        assert_eq!(lines.len(), 1, "{name}: {lines:?}");
        assert!(lines[0].contains(reason), "{name}: {}", lines[0]);
        assert!(lines[0].len() < 400, "one concise line: {}", lines[0]);
        // The refresh wrote a good file over it.
        let rewritten = std::fs::read(dir.path().join(format!("snapshot-{name}.bin"))).unwrap();
        assert_eq!(
            rewritten[8..12],
            SNAPSHOT_VERSION.to_le_bytes(),
            "{name}: rewritten in the current format"
        );
    }

    // The same integration's file, written for another data day.
    let dir = tempfile::tempdir().unwrap();
    let other = start(
        yaml(
            &sim,
            "reconfigured",
            "refresh_interval: 6h\ndata_delay_days: 2\n",
            "",
        ),
        &clock,
        Some(dir.path()),
    )
    .await;
    wait_for_refresh(other.local_addr(), &["reconfigured"]).await;
    other.shutdown().await;
    let before = billed(&sim);
    let exporter = start(
        yaml(&sim, "reconfigured", top, ""),
        &clock,
        Some(dir.path()),
    )
    .await;
    let samples = scrape(&exporter).await;
    let other_data_day = Utc
        .from_utc_datetime(&date(2026, 11, 21).and_hms_opt(0, 0, 0).unwrap())
        .timestamp() as f64;
    assert_ne!(
        gauge(
            &samples,
            "aws_cost_data_day_timestamp_seconds",
            "reconfigured"
        ),
        Some(other_data_day),
        "the other configuration's data is never served"
    );
    wait_for_refresh(exporter.local_addr(), &["reconfigured"]).await;
    assert_eq!(billed(&sim) - before, requests);
    // The parts whose series the data day shapes: one line names them.
    let lines = log_lines(
        "reconfigured",
        "not serving series shaped by other settings",
    );
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("parts=costs,tags"), "{}", lines[0]);
    exporter.shutdown().await;
}

#[tokio::test]
async fn the_daily_cap_stops_refreshes_until_the_next_utc_day() {
    let today = date(2026, 11, 23);
    let sim = org_simulator(today, 500).await;
    let clock = TestClock::at(noon(today));
    // What one refresh costs, measured.
    let probe = start(
        yaml(&sim, "probe", "refresh_interval: 6h\n", ""),
        &clock,
        None,
    )
    .await;
    wait_for_refresh(probe.local_addr(), &["probe"]).await;
    let expected = cost_bytes(&probe).await;
    probe.shutdown().await;
    let per_refresh = billed(&sim);
    assert!(per_refresh >= 4, "{per_refresh}");
    // Room for one refresh and half of the next, refreshing every second.
    let cap = per_refresh + per_refresh / 2;
    let config = yaml(
        &sim,
        "capped",
        "refresh_interval: 1s\n",
        &format!("    max_api_requests_per_day: {cap}\n"),
    );
    let before = billed(&sim);
    let exporter = start(config, &clock, None).await;
    let addr = exporter.local_addr();
    let samples = wait_for(addr, "the cap to be reached", |s| {
        gauge(s, "aws_cost_api_budget_exhausted", "capped") == Some(1.0)
            && refresh_success(s, "capped") == Some(0.0)
    })
    .await;
    assert_eq!(billed(&sim) - before, cap, "exactly the cap");
    let same_names = |t: &String| t.replace("integration=\"probe\"", "integration=\"capped\"");
    assert_eq!(
        cost_bytes(&exporter).await,
        expected.clone().map(|t| same_names(&t)),
        "the last good data is served"
    );
    assert_eq!(
        gauge(&samples, "aws_cost_data_age_seconds", "capped"),
        Some(0.0)
    );
    let failures = log_lines("capped", "refresh failed");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].contains("reason=api_budget"), "{}", failures[0]);
    for reason in ["api_budget", "access_denied", "aws_error", "throttled"] {
        assert_eq!(
            value_of(
                &samples,
                "aws_cost_refresh_failures_total",
                &[("integration", "capped"), ("reason", reason)]
            ),
            Some(if reason == "api_budget" { 1.0 } else { 0.0 }),
            "{reason}"
        );
    }
    assert!(
        failures[0].contains(&format!(
            "the daily cap of {cap} billed Cost Explorer requests (max_api_requests_per_day) is reached"
        )),
        "{}",
        failures[0]
    );

    // No further attempt that day, although the interval is a second.
    clock.set(Utc.from_utc_datetime(&today.and_hms_opt(23, 59, 59).unwrap()));
    let_the_scheduler_look().await;
    assert_eq!(billed(&sim) - before, cap);
    assert_eq!(log_lines("capped", "refresh failed").len(), 1);
    assert_eq!(
        gauge(
            &scrape(&exporter).await,
            "aws_cost_api_budget_exhausted",
            "capped"
        ),
        Some(1.0)
    );

    // The next UTC day: the gauge is 0 at once, refreshes resume, and stop again at the cap.
    clock.set(Utc.from_utc_datetime(&date(2026, 11, 24).and_hms_opt(0, 0, 1).unwrap()));
    assert_eq!(
        gauge(
            &scrape(&exporter).await,
            "aws_cost_api_budget_exhausted",
            "capped"
        ),
        Some(0.0)
    );
    wait_for(addr, "a successful refresh the next day", |s| {
        refresh_success(s, "capped") == Some(1.0)
    })
    .await;
    wait_for(addr, "the cap to be reached the next day", |s| {
        gauge(s, "aws_cost_api_budget_exhausted", "capped") == Some(1.0)
    })
    .await;
    let_the_scheduler_look().await;
    assert_eq!(billed(&sim) - before, 2 * cap, "the cap again, exactly");
    exporter.shutdown().await;
}

#[tokio::test]
async fn the_day_count_survives_a_restart() {
    let today = date(2026, 11, 23);
    let sim = org_simulator(today, 500).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::at(noon(today) - TimeDelta::hours(10));
    let config = |cap: usize| {
        yaml(
            &sim,
            "counted",
            "refresh_interval: 6h\n",
            &format!("    max_api_requests_per_day: {cap}\n"),
        )
    };
    let first = start(config(1000), &clock, Some(dir.path())).await;
    wait_for_refresh(first.local_addr(), &["counted"]).await;
    first.shutdown().await;
    let per_refresh = billed(&sim);
    // What the first run reserved on disk before its requests.
    let reserved = per_refresh.div_ceil(RESERVE_BLOCK as usize) * RESERVE_BLOCK as usize;

    // Later the same day, past the interval: the restart refreshes at once, but only half a
    // refresh is left of a cap that, counted from zero, would allow a whole one.
    clock.set(noon(today));
    let cap = reserved + per_refresh / 2;
    let second = start(config(cap), &clock, Some(dir.path())).await;
    let samples = wait_for_refresh(second.local_addr(), &["counted"]).await;
    assert_eq!(refresh_success(&samples, "counted"), Some(0.0));
    assert_eq!(
        gauge(&samples, "aws_cost_api_budget_exhausted", "counted"),
        Some(1.0)
    );
    assert_eq!(billed(&sim) - per_refresh, cap - reserved);
    second.shutdown().await;

    // A crash loop: every restart that day makes no request at all.
    for _ in 0..2 {
        let again = start(config(cap), &clock, Some(dir.path())).await;
        let samples = wait_for_refresh(again.local_addr(), &["counted"]).await;
        assert_eq!(refresh_success(&samples, "counted"), Some(0.0));
        again.shutdown().await;
    }
    assert_eq!(billed(&sim) - per_refresh, cap - reserved);
}

/// Every part's stored series live under its own fingerprint. Restarted with a part turned
/// off and Cost Explorer hanging, the exporter serves at once the stored series of every part
/// whose settings did not change, never the removed part's, and buys nothing; restarted with a
/// part turned on from a file written without it, it fetches that part alone (when it needs
/// neither costs nor their rows) and serves the rest from the file.
#[tokio::test]
async fn each_part_is_stored_under_its_own_fingerprint() {
    let today = date(2026, 11, 23);
    let sim = demo_simulator(today, DEMO_SCALE).start().await.unwrap();
    let full = full_config(&sim.endpoint());
    let clock = TestClock::at(noon(today));
    let source = tempfile::tempdir().unwrap();
    let first = start(parse_config(&full), &clock, Some(source.path())).await;
    wait_for_refresh(first.local_addr(), &["payer"]).await;
    let initial = get(first.local_addr(), "/metrics").await.text();
    first.shutdown().await;
    let stored_full = std::fs::read(source.path().join("snapshot-payer.bin")).unwrap();

    for (name, line, replacement) in OFF {
        let on = parse_config(&full);
        let off = parse_config(&full.replace(line, replacement));
        let owed: Vec<&str> = PARTS
            .iter()
            .filter(|p| (p.enabled)(&off.integrations[0]) && !unchanged(p, &on, &off))
            .map(|p| p.name)
            .collect();

        // Turned off, Cost Explorer hanging.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("snapshot-payer.bin"), &stored_full).unwrap();
        sim.set_behavior("111111111111", Behavior::Hang(Duration::from_secs(3600)));
        clock.set(noon(today) + TimeDelta::hours(1));
        let before = sim.requests().len();
        let exporter = start(off.clone(), &clock, Some(dir.path())).await;
        let page = get(exporter.local_addr(), "/metrics").await.text();
        for other in &PARTS {
            let served = (other.enabled)(&off.integrations[0]) && !owed.contains(&other.name);
            let expected = if served {
                lines_of(&initial, other)
            } else {
                Vec::new()
            };
            assert_eq!(
                lines_of(&page, other),
                expected,
                "{name} off: {}",
                other.name
            );
        }
        if owed.is_empty() {
            // Nothing owed: a refresh would have started at once (no start spread here).
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(sim.requests().len(), before, "{name} off: nothing bought");
        }
        exporter.shutdown().await;
        sim.set_behavior("111111111111", Behavior::Normal);

        // Turned on, from a file a refresh with the part off wrote.
        let dir = tempfile::tempdir().unwrap();
        clock.set(noon(today));
        let writer = start(off, &clock, Some(dir.path())).await;
        wait_for_refresh(writer.local_addr(), &["payer"]).await;
        writer.shutdown().await;
        clock.set(noon(today) + TimeDelta::hours(1));
        let before = sim.requests().len();
        let exporter = start(on, &clock, Some(dir.path())).await;
        wait_for(exporter.local_addr(), "every part serving", |s| {
            query_success(s, name) == Some(1.0) && PARTS.iter().all(|p| serves(s, p))
        })
        .await;
        let page = get(exporter.local_addr(), "/metrics").await.text();
        check_back(name, &page, &initial, &sim.requests()[before..]);
        exporter.shutdown().await;
    }
}
