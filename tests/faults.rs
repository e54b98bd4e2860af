//! Faults from AWS, through the real SDK against the simulated Cost Explorer and STS: for each,
//! the exporter keeps serving the last good data byte for byte, counts the failure under its
//! reason, logs one concise line, and recovers by itself once AWS does. And the schedule: a cap
//! on concurrent refreshes, and never two refreshes of one integration at once.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use aws_cost_exporter::credentials::Timeouts;
use aws_cost_exporter::parts::FAMILIES;
use aws_cost_exporter::refresh::RefreshOptions;
use aws_cost_simulator::{Arrival, Behavior, Simulator};
use common::*;

const ACCOUNT: &str = "222222222222";
const KEY: (&str, &str) = ("AKIATESTFLT01EXAMPLE", "faults-secret-value-do-not-leak");
const REASONS: [&str; 8] = [
    "access_denied",
    "throttled",
    "aws_error",
    "timeout",
    "bad_response",
    "unsupported_unit",
    "credentials",
    "api_budget",
];

/// The log lines that mention `integration=<name>`.
fn log_lines(integration: &str) -> Vec<String> {
    logs::integration_lines(integration)
}

/// Fast schedules for tests: a retry 100 ms after a failure; SDK timeouts long enough for the
/// SDK's own retries (3 attempts, backoff up to 1 s and 2 s) unless a test shortens them.
fn options(timeouts: Timeouts) -> RefreshOptions {
    RefreshOptions {
        timeouts,
        retry_min: Duration::from_millis(100),
        start_spread: Duration::ZERO,
        max_concurrency: 4,
    }
}

fn roomy() -> Timeouts {
    Timeouts {
        attempt: Duration::from_secs(20),
        operation: Duration::from_secs(40),
    }
}

fn yaml(sim: &Simulator, name: &str, interval: &str, extra: &str) -> String {
    format!(
        "refresh_interval: {interval}\nintegrations:\n  - name: {name}\n    account_id: \"{ACCOUNT}\"\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {e}\n{extra}",
        KEY.0,
        KEY.1,
        e = sim.endpoint()
    )
}

async fn standalone(today: chrono::NaiveDate) -> Simulator {
    Simulator::builder()
        .account(ACCOUNT, single_dataset(ACCOUNT, today, 9))
        .access_key(KEY.0, KEY.1, ACCOUNT)
        .start()
        .await
        .unwrap()
}

/// The integration's cost series lines as served, byte for byte.
async fn cost_lines(addr: SocketAddr, integration: &str) -> (Vec<String>, Vec<Sample>) {
    let text = get(addr, "/metrics").await.text();
    let label = format!("integration=\"{integration}\"");
    let lines = text
        .lines()
        .filter(|line| {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            !line.starts_with('#')
                && line.contains(&label)
                && FAMILIES.iter().any(|f| f.name == name)
        })
        .map(str::to_string)
        .collect();
    (lines, parse_exposition(&text))
}

fn failures(samples: &[Sample], integration: &str, reason: &str) -> Option<f64> {
    value_of(
        samples,
        "aws_cost_refresh_failures_total",
        &[("integration", integration), ("reason", reason)],
    )
}

/// Polls until `predicate` holds for the scraped cost lines and samples.
async fn wait_until(
    addr: SocketAddr,
    integration: &str,
    what: &str,
    predicate: impl Fn(&[Sample]) -> bool,
) -> (Vec<String>, Vec<Sample>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        let (lines, samples) = cost_lines(addr, integration).await;
        if predicate(&samples) {
            return (lines, samples);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "timed out waiting for {what}; log:\n{}",
        log_lines(integration).join("\n")
    );
}

/// What a fault must do to the exporter.
struct Expect {
    reason: &'static str,
    /// Substrings of the logged error, in order: those a budget never cuts.
    error: &'static [&'static str],
    /// How the logged error ends: AWS's HTTP status and request id, whole.
    answered: Answered,
}

/// Serves good data, then meets `fault` until it is cleared, then recovers: the last good data
/// is served unchanged throughout, the failures are counted under `expect.reason` (and no
/// other), each logged in one concise line (at most 300 characters, with the operation, AWS's
/// error code, the HTTP status and the request id whole), and the next refresh after the fault
/// succeeds.
async fn fault_and_recover(
    name: &str,
    sim: &Simulator,
    fault_account: &str,
    fault: Behavior,
    yaml: &str,
    timeouts: Timeouts,
    expect: Expect,
) {
    logs::capture();
    let today = date(2026, 11, 23);
    let exporter = start_exporter_with(parse_config(yaml), today, options(timeouts)).await;
    let addr = exporter.local_addr();
    let (good, samples) = wait_until(addr, name, "a first good refresh", |s| {
        refresh_success(s, name) == Some(1.0)
    })
    .await;
    assert!(good.len() > 20, "{good:?}");
    for reason in REASONS {
        assert_eq!(failures(&samples, name, reason), Some(0.0), "{reason}");
    }

    sim.set_behavior(fault_account, fault.clone());
    // Every attempt after the first failure fails as long as the fault lasts: the scrape that
    // shows a failure shows the failed state.
    let (during, samples) = wait_until(addr, name, "a failed refresh", |s| {
        failures(s, name, expect.reason).is_some_and(|n| n >= 1.0)
    })
    .await;
    assert_eq!(refresh_success(&samples, name), Some(0.0), "{fault:?}");
    assert_eq!(during, good, "{fault:?}: the last good data, byte for byte");
    for reason in REASONS.iter().filter(|r| **r != expect.reason) {
        assert_eq!(
            failures(&samples, name, reason),
            Some(0.0),
            "{fault:?}: {reason}"
        );
    }
    assert_eq!(get(addr, "/-/ready").await.status, 200);

    sim.set_behavior(fault_account, Behavior::Normal);
    let (after, samples) = wait_until(addr, name, "a recovered refresh", |s| {
        refresh_success(s, name) == Some(1.0)
    })
    .await;
    assert_eq!(after, good, "{fault:?}: the same data after recovery");
    // No attempt fails once the fault is cleared and one has succeeded: the count is final,
    // one per logged failure.
    let failed: Vec<String> = log_lines(name)
        .into_iter()
        .filter(|l| l.contains(" msg=\"refresh failed\" "))
        .collect();
    let counted = failures(&samples, name, expect.reason).unwrap();
    assert!(counted >= 1.0);
    assert_eq!(counted, failed.len() as f64, "{fault:?}: {failed:#?}");
    for reason in REASONS.iter().filter(|r| **r != expect.reason) {
        assert_eq!(
            failures(&samples, name, reason),
            Some(0.0),
            "{fault:?}: {reason}"
        );
    }
    eprintln!("{} characters: {}", failed[0].chars().count(), failed[0]);
    for line in &failed {
        check_failure_line(line, expect.reason, expect.error, expect.answered, "");
    }
    let page = get(addr, "/metrics").await.text();
    assert!(
        !page.contains(KEY.1) && !page.contains("simulated-s"),
        "a secret in /metrics"
    );
    for line in log_lines(name) {
        assert!(!line.contains(KEY.1), "the secret in {line}");
        assert!(
            !line.contains("simulated-secret"),
            "a session secret in {line}"
        );
        assert!(
            !line.contains("simulated-session-token"),
            "a session token in {line}"
        );
    }
    exporter.shutdown().await;
}

/// A standalone account's integration refreshing every second.
async fn standalone_fault(name: &'static str, fault: Behavior, timeouts: Timeouts, expect: Expect) {
    let today = date(2026, 11, 23);
    let sim = standalone(today).await;
    let yaml = yaml(&sim, name, "1s", "");
    fault_and_recover(name, &sim, ACCOUNT, fault, &yaml, timeouts, expect).await;
}

#[tokio::test]
async fn throttling_beyond_the_sdk_retries() {
    standalone_fault(
        "throttled",
        Behavior::Throttled(usize::MAX),
        roomy(),
        Expect {
            reason: "throttled",
            error: &["GetCostAndUsage: LimitExceededException: Rate exceeded"],
            answered: Answered::Status(400),
        },
    )
    .await;
}

#[tokio::test]
async fn http_500() {
    standalone_fault(
        "http500",
        Behavior::ServerError,
        roomy(),
        Expect {
            reason: "aws_error",
            error: &["GetCostAndUsage: InternalFailure: "],
            answered: Answered::Status(500),
        },
    )
    .await;
}

#[tokio::test]
async fn http_503_service_unavailable() {
    standalone_fault(
        "http503",
        Behavior::ServiceUnavailable,
        roomy(),
        Expect {
            reason: "aws_error",
            error: &["GetCostAndUsage: ServiceUnavailable: "],
            answered: Answered::Status(503),
        },
    )
    .await;
}

#[tokio::test]
async fn a_hanging_cost_explorer_is_cut_by_the_timeout() {
    // The operation timeout comes first: one request per failed refresh.
    standalone_fault(
        "hanging",
        Behavior::Hang(Duration::from_secs(3600)),
        Timeouts {
            attempt: Duration::from_secs(20),
            operation: Duration::from_secs(1),
        },
        Expect {
            reason: "timeout",
            error: &[
                "GetCostAndUsage: no answer in time: operation timeout (all attempts including retries) occurred after 1s",
            ],
            answered: Answered::Nothing,
        },
    )
    .await;
}

#[tokio::test]
async fn malformed_json() {
    standalone_fault(
        "malformed",
        Behavior::MalformedJson,
        roomy(),
        Expect {
            reason: "bad_response",
            error: &["malformed Cost Explorer response: page 1 of GetCostAndUsage"],
            answered: Answered::RequestId,
        },
    )
    .await;
}

#[tokio::test]
async fn a_truncated_body() {
    standalone_fault(
        "truncated",
        Behavior::TruncatedBody,
        roomy(),
        Expect {
            reason: "bad_response",
            error: &["GetCostAndUsage: unreadable response: "],
            answered: Answered::Status(200),
        },
    )
    .await;
}

#[tokio::test]
async fn amounts_in_another_unit() {
    standalone_fault(
        "euro",
        Behavior::Currency("EUR".into()),
        roomy(),
        Expect {
            reason: "unsupported_unit",
            error: &[
                "Cost Explorer returned UnblendedCost in \"EUR\"",
                "only USD amounts are supported",
            ],
            answered: Answered::Nothing,
        },
    )
    .await;
}

#[tokio::test]
async fn expired_credentials() {
    standalone_fault(
        "expired",
        Behavior::ExpiredToken,
        roomy(),
        Expect {
            reason: "credentials",
            error: &[
                "GetCostAndUsage: ExpiredTokenException: The security token included in the request is expired",
            ],
            answered: Answered::Status(400),
        },
    )
    .await;
}

#[tokio::test]
async fn refused_credentials() {
    standalone_fault(
        "unrecognized",
        Behavior::RefusedCredentials,
        roomy(),
        Expect {
            reason: "credentials",
            error: &["GetCostAndUsage: UnrecognizedClientException: The security token"],
            answered: Answered::Status(400),
        },
    )
    .await;
}

#[tokio::test]
async fn an_invalid_signature() {
    standalone_fault(
        "signature",
        Behavior::InvalidSignature,
        roomy(),
        Expect {
            reason: "credentials",
            error: &["GetCostAndUsage: InvalidSignatureException: The request signature"],
            answered: Answered::Status(400),
        },
    )
    .await;
}

#[tokio::test]
async fn access_denied() {
    standalone_fault(
        "denied",
        Behavior::AccessDenied,
        roomy(),
        Expect {
            reason: "access_denied",
            // AWS's message is longer than the line allows: its middle goes.
            error: &[
                "GetCostAndUsage: AccessDeniedException: User: arn:aws:iam::222222222222:",
                "…",
                " action",
            ],
            answered: Answered::Status(400),
        },
    )
    .await;
}

#[tokio::test]
async fn a_page_token_that_loops() {
    standalone_fault(
        "looping",
        Behavior::LoopingToken,
        roomy(),
        Expect {
            reason: "bad_response",
            error: &[
                "Cost Explorer returned a NextPageToken it had already returned, after 2 pages of GetCostAndUsage MONTHLY",
            ],
            answered: Answered::Nothing,
        },
    )
    .await;
}

#[tokio::test]
async fn an_sts_that_refuses_assume_role() {
    let today = date(2026, 11, 23);
    let sim = Simulator::builder()
        .account(ACCOUNT, single_dataset(ACCOUNT, today, 9))
        .access_key(KEY.0, KEY.1, "999999999999")
        .role(ACCOUNT, "CostExporter", Some("faults-external-id"))
        // Shorter than the SDK's renewal buffer: every request assumes the role again.
        .session_duration(Duration::from_secs(5))
        .start()
        .await
        .unwrap();
    let yaml = format!(
        "refresh_interval: 1s\nintegrations:\n  - name: assumed\n    account_id: \"{ACCOUNT}\"\n    assumed_role_name: CostExporter\n    external_id: faults-external-id\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {e}\n    sts_endpoint_url: {e}\n",
        KEY.0,
        KEY.1,
        e = sim.endpoint()
    );
    fault_and_recover(
        "assumed",
        &sim,
        ACCOUNT,
        Behavior::AssumeRoleDenied,
        &yaml,
        roomy(),
        Expect {
            reason: "credentials",
            error: &[
                "GetCostAndUsage: no credentials: AssumeRole: AccessDenied: User: arn:aws:iam::",
                "…",
                "/CostExporter",
            ],
            answered: Answered::Status(403),
        },
    )
    .await;
    let log = log_lines("assumed").join("\n");
    assert!(
        !log.contains("faults-external-id"),
        "the external id in {log}"
    );
}

#[tokio::test]
async fn slow_answers_within_the_timeouts_succeed_and_never_block_a_scrape() {
    logs::capture();
    let today = date(2026, 11, 23);
    let sim = standalone(today).await;
    sim.set_behavior(ACCOUNT, Behavior::Hang(Duration::from_millis(300)));
    let exporter = start_exporter_with(
        parse_config(&yaml(&sim, "slow", "1h", "")),
        today,
        options(Timeouts {
            attempt: Duration::from_secs(20),
            operation: Duration::from_secs(40),
        }),
    )
    .await;
    let addr = exporter.local_addr();
    let deadline = tokio::time::Instant::now() + WAIT;
    while sim.in_flight() == 0 && sim.requests().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "a refresh starts");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A refresh is waiting on AWS: a scrape still answers.
    let response = tokio::time::timeout(Duration::from_secs(10), get(addr, "/metrics"))
        .await
        .expect("a scrape answers while AWS is slow");
    assert_eq!(response.status, 200);
    let (_, samples) = wait_until(addr, "slow", "a slow refresh", |s| {
        refresh_success(s, "slow").is_some()
    })
    .await;
    assert_eq!(refresh_success(&samples, "slow"), Some(1.0));
    for reason in REASONS {
        assert_eq!(failures(&samples, "slow", reason), Some(0.0), "{reason}");
    }
    let dataset = sim.dataset(ACCOUNT).unwrap();
    let daily: f64 = samples
        .iter()
        .filter(|s| s.name == "aws_cost_daily_usd" && s.label("integration") == "slow")
        .map(|s| s.value)
        .sum();
    assert_close(
        daily,
        dataset.total(aws_cost_simulator::CostMetric::Unblended, |r| {
            r.day == date(2026, 11, 22)
        }),
        "daily after slow answers",
    );
    exporter.shutdown().await;
}

#[tokio::test]
async fn a_fault_lasting_one_refresh_counts_exactly_once() {
    logs::capture();
    let today = date(2026, 11, 23);
    let sim = standalone(today).await;
    let exporter = start_exporter_with(
        parse_config(&yaml(&sim, "once", "1s", "")),
        today,
        options(roomy()),
    )
    .await;
    let addr = exporter.local_addr();
    wait_until(addr, "once", "a first good refresh", |s| {
        refresh_success(s, "once") == Some(1.0)
    })
    .await;
    // HTTP 500 is retried by the SDK: three attempts, one failed refresh.
    sim.set_behavior_for(ACCOUNT, Behavior::ServerError, 3);
    let (_, samples) = wait_until(addr, "once", "a failure, then a success", |s| {
        failures(s, "once", "aws_error") == Some(1.0) && refresh_success(s, "once") == Some(1.0)
    })
    .await;
    assert_eq!(
        value_of(
            &samples,
            "aws_cost_api_requests_total",
            &[
                ("integration", "once"),
                ("operation", "GetCostAndUsage"),
                ("outcome", "server_error")
            ]
        ),
        Some(3.0)
    );
    // Access denied is not retried: one request, one failed refresh.
    sim.set_behavior_for(ACCOUNT, Behavior::AccessDenied, 1);
    let (_, samples) = wait_until(addr, "once", "a denied refresh, then a success", |s| {
        failures(s, "once", "access_denied") == Some(1.0) && refresh_success(s, "once") == Some(1.0)
    })
    .await;
    assert_eq!(failures(&samples, "once", "aws_error"), Some(1.0));
    for reason in [
        "throttled",
        "timeout",
        "bad_response",
        "unsupported_unit",
        "credentials",
    ] {
        assert_eq!(failures(&samples, "once", reason), Some(0.0), "{reason}");
    }
    exporter.shutdown().await;
}

#[tokio::test]
async fn a_partial_failure_counts_the_reason_of_its_first_failed_part() {
    logs::capture();
    let today = date(2026, 11, 23);
    let sim = Simulator::builder()
        .account("111111111111", org_dataset(today, 3))
        .access_key(PAYER_KEY.0, PAYER_KEY.1, "111111111111")
        .fail(
            "111111111111",
            "GetCostForecast",
            "AccessDeniedException",
            "User: arn:aws:iam::111111111111:user/cost-exporter is not authorized to perform: ce:GetCostForecast",
        )
        .fail(
            "111111111111",
            "ListAccounts",
            "AWSOrganizationsNotInUseException",
            "Your account is not a member of an organization.",
        )
        .start()
        .await
        .unwrap();
    let yaml = format!(
        "refresh_interval: 1h\nintegrations:\n  - name: partial\n    account_id: \"111111111111\"\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {e}\n    organizations: true\n    organizations_endpoint_url: {e}\n",
        PAYER_KEY.0,
        PAYER_KEY.1,
        e = sim.endpoint()
    );
    let exporter = start_exporter_with(parse_config(&yaml), today, options(roomy())).await;
    let addr = exporter.local_addr();
    let (lines, samples) = wait_until(addr, "partial", "a partial refresh", |s| {
        failures(s, "partial", "access_denied") == Some(1.0)
    })
    .await;
    assert_eq!(refresh_success(&samples, "partial"), Some(0.0));
    assert!(lines.iter().any(|l| l.starts_with("aws_cost_daily_usd{")));
    for reason in REASONS.iter().filter(|r| **r != "access_denied") {
        assert_eq!(failures(&samples, "partial", reason), Some(0.0), "{reason}");
    }
    let line = log_lines("partial")
        .into_iter()
        .find(|l| l.contains(" msg=\"refresh partly failed\" "))
        .expect("a partial failure line");
    eprintln!("{} characters: {line}", line.chars().count());
    let error = check_failure_line(
        &line,
        "access_denied",
        &[": GetCostForecast: AccessDeniedException: "],
        Answered::Status(400),
        " (also failed: ",
    );
    // Little room is left in a partial failure's line: AWS's message, and here the part's name,
    // are down to an ellipsis; the other failed part's name stays.
    assert!(error.ends_with(" (also failed: organizations)"), "{error}");
    assert!(logfmt_field(&line, "series").is_some(), "{line}");
    exporter.shutdown().await;
}

#[tokio::test]
async fn the_concurrency_cap_holds() {
    logs::capture();
    let today = date(2026, 11, 23);
    let sim = standalone(today).await;
    sim.set_behavior(ACCOUNT, Behavior::Hang(Duration::from_secs(3600)));
    let names = ["cap-a", "cap-b", "cap-c", "cap-d", "cap-e"];
    let mut config = "refresh_interval: 1h\nintegrations:\n".to_string();
    for name in names {
        config.push_str(&format!(
            "  - name: {name}\n    account_id: \"{ACCOUNT}\"\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {}\n",
            KEY.0,
            KEY.1,
            sim.endpoint()
        ));
    }
    let exporter = start_exporter_with(
        parse_config(&config),
        today,
        RefreshOptions {
            max_concurrency: 2,
            ..options(roomy())
        },
    )
    .await;
    let addr = exporter.local_addr();
    // Two refreshes hang inside Cost Explorer; the other three wait for a permit.
    let deadline = tokio::time::Instant::now() + WAIT;
    while sim.in_flight() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "two refreshes start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sim.arrivals().len(), 2, "{:?}", sim.arrivals());
    let response = tokio::time::timeout(Duration::from_secs(10), get(addr, "/metrics"))
        .await
        .expect("a scrape answers while refreshes hang");
    assert_eq!(response.status, 200);

    sim.set_behavior(ACCOUNT, Behavior::Normal);
    let samples = wait_for(addr, "every integration refreshed", |s| {
        names.iter().all(|n| refresh_success(s, n) == Some(1.0))
    })
    .await;
    assert_eq!(sim.peak_in_flight(), 2, "never more than two at once");
    for name in names {
        assert_eq!(failures(&samples, name, "timeout"), Some(0.0));
    }
    exporter.shutdown().await;
}

#[tokio::test]
async fn a_reload_stops_the_old_refresh_before_the_new_one_queries() {
    logs::capture();
    let today = date(2026, 11, 23);
    const OTHER_KEY: (&str, &str) = ("AKIATESTFLT02EXAMPLE", "faults-second-secret");
    let sim = Simulator::builder()
        .account(ACCOUNT, single_dataset(ACCOUNT, today, 9))
        .access_key(KEY.0, KEY.1, ACCOUNT)
        .access_key(OTHER_KEY.0, OTHER_KEY.1, ACCOUNT)
        .behavior(ACCOUNT, Behavior::Hang(Duration::from_secs(3600)))
        .start()
        .await
        .unwrap();
    let mut exporter = start_exporter_with(
        parse_config(&yaml(&sim, "restarted", "1h", "")),
        today,
        options(roomy()),
    )
    .await;
    let addr = exporter.local_addr();
    let deadline = tokio::time::Instant::now() + WAIT;
    while sim.in_flight() < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first refresh hangs"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Changed keys: the integration restarts.
    let changed = yaml(&sim, "restarted", "1h", "")
        .replace(KEY.0, OTHER_KEY.0)
        .replace(KEY.1, OTHER_KEY.1);
    let summary = exporter.reload(parse_config(&changed)).await;
    assert_eq!(summary.changed, vec!["restarted".to_string()]);
    let old_requests =
        |arrivals: &[Arrival]| arrivals.iter().filter(|a| a.access_key_id == KEY.0).count();
    let before = old_requests(&sim.arrivals());
    assert_eq!(before, 1, "{:?}", sim.arrivals());

    sim.set_behavior(ACCOUNT, Behavior::Normal);
    wait_for(addr, "the restarted integration refreshed", |s| {
        refresh_success(s, "restarted") == Some(1.0)
    })
    .await;
    let arrivals = sim.arrivals();
    assert_eq!(
        old_requests(&arrivals),
        before,
        "the old task sent nothing more"
    );
    let first_new = arrivals
        .iter()
        .position(|a| a.access_key_id == OTHER_KEY.0)
        .expect("the new task queried");
    assert!(
        arrivals[first_new..]
            .iter()
            .all(|a| a.access_key_id == OTHER_KEY.0),
        "no request of the old task after the new one started: {arrivals:?}"
    );
    // The old task's hanging request was given up before the new task's first one arrived:
    // never two requests of the integration at once.
    assert!(
        arrivals.iter().all(|a| a.others_in_flight == 0),
        "{arrivals:#?}"
    );
    exporter.shutdown().await;
}

#[tokio::test]
async fn a_removed_integration_forgets_its_failure_counters() {
    logs::capture();
    let today = date(2026, 11, 23);
    let sim = standalone(today).await;
    sim.set_behavior(ACCOUNT, Behavior::AccessDenied);
    let mut exporter = start_exporter_with(
        parse_config(&yaml(&sim, "gone", "1h", "")),
        today,
        options(roomy()),
    )
    .await;
    let addr = exporter.local_addr();
    wait_until(addr, "gone", "a denied refresh", |s| {
        failures(s, "gone", "access_denied") == Some(1.0)
    })
    .await;
    sim.set_behavior(ACCOUNT, Behavior::Normal);
    let summary = exporter
        .reload(parse_config(&yaml(&sim, "kept", "1h", "")))
        .await;
    assert_eq!(summary.removed, vec!["gone".to_string()]);
    let samples = wait_for(addr, "the new integration", |s| {
        refresh_success(s, "kept") == Some(1.0)
    })
    .await;
    assert!(
        samples
            .iter()
            .all(|s| !(s.name == "aws_cost_refresh_failures_total"
                && s.label("integration") == "gone")),
        "the removed integration's counters are gone"
    );
    assert_eq!(failures(&samples, "kept", "access_denied"), Some(0.0));
    exporter.shutdown().await;
}
