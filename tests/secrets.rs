//! Secrets never leak: the binary runs with known fake secrets (a static secret access key, a
//! `${VAR}`-expanded one, an external id, and the session tokens and secrets the simulated STS
//! issues) at the most verbose logging (`--log.level debug` and `RUST_LOG=trace`, so that the
//! AWS SDK's and hyper's own logs are on), through every fault mode of the simulator and two bad
//! configuration reloads; then all of its stdout and stderr and every page it served are searched
//! for each secret value.
//!
//! Access key ids are identifiers, not secrets, in AWS's model (they travel in clear in every
//! request's `Authorization` header and in CloudTrail): the AWS SDK prints them in its own debug
//! and trace lines (the endpoint resolver's and the signer's dumps of the resolved identity).
//! They must appear in no line at info level or above and in no page.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_cost_simulator::{Behavior, Simulator};
use common::running::BIN;
use common::*;

const PAYER_ACCOUNT: &str = "111111111111";
const WORKLOAD_ACCOUNT: &str = "222222222222";
const PAYER_KEY_ID: &str = "AKIASECRETSP1EXAMPLE";
const PAYER_SECRET: &str = "payer-secret-canary-7f3a91c2";
const BASE_KEY_ID: &str = "AKIASECRETSB1EXAMPLE";
/// The base identity's secret, given to the binary through `${ACE_SECRETS_TEST_SECRET}`.
const EXPANDED_SECRET: &str = "expanded-secret-canary-5be02d7e";
const EXTERNAL_ID: &str = "external-id-canary-c41d9e06";
/// In the invalid files of the bad reloads only.
const RELOAD_SECRET: &str = "reload-secret-canary-9a6e3b15";

/// Every line the binary writes, in order, from both streams.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<(Stream, String)>>>);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stream {
    Stdout,
    Stderr,
}

impl Output {
    fn collect(&self, stream: Stream, reader: impl Read + Send + 'static) {
        let lines = self.0.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut line = Vec::new();
            // Bytes, not UTF-8 lines: nothing the binary writes is skipped.
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                lines.lock().unwrap().push((stream, text));
                line.clear();
            }
        });
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn lines(&self) -> Vec<(Stream, String)> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (at most [`WAIT`]) for a stderr line after the first `from` lines that contains
    /// every one of `parts`.
    async fn wait_for(&self, from: usize, parts: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(line) = self.0.lock().unwrap()[from..]
                .iter()
                .find(|(s, l)| *s == Stream::Stderr && parts.iter().all(|p| l.contains(p)))
            {
                return line.1.clone();
            }
            if tokio::time::Instant::now() >= deadline {
                // The exporter's own lines name no target; other crates' do.
                let ours: Vec<String> = self.0.lock().unwrap()[from..]
                    .iter()
                    .filter(|(_, l)| l.starts_with("ts=") && !l.contains(" target="))
                    .map(|(_, l)| l.clone())
                    .collect();
                panic!(
                    "no log line with {parts:?} within {WAIT:?}; the exporter's own lines since:\n{}",
                    ours.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

struct Exporter {
    child: Child,
    output: Output,
}

impl Exporter {
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(sim: &Simulator) -> String {
    format!(
        "refresh_interval: 1s\n\
         check_interval: off\n\
         integrations:\n\
         \x20 - name: payer\n\
         \x20   account_id: \"{PAYER_ACCOUNT}\"\n\
         \x20   access_key_id: {PAYER_KEY_ID}\n\
         \x20   secret_access_key: {PAYER_SECRET}\n\
         \x20   endpoint_url: {e}\n\
         \x20 - name: workload\n\
         \x20   account_id: \"{WORKLOAD_ACCOUNT}\"\n\
         \x20   assumed_role_name: CostExporter\n\
         \x20   external_id: {EXTERNAL_ID}\n\
         \x20   access_key_id: {BASE_KEY_ID}\n\
         \x20   secret_access_key: ${{ACE_SECRETS_TEST_SECRET}}\n\
         \x20   endpoint_url: {e}\n\
         \x20   sts_endpoint_url: {e}\n",
        e = sim.endpoint()
    )
}

/// Every page the exporter serves, as served (no gzip: the same text).
async fn pages(addr: SocketAddr) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, headers) in [
        ("/", &[][..]),
        ("/metrics", &[][..]),
        (
            "/metrics",
            &[("accept", "application/openmetrics-text; version=1.0.0")][..],
        ),
        ("/-/healthy", &[][..]),
        ("/-/ready", &[][..]),
    ] {
        let response = request(addr, http::Method::GET, path, headers).await;
        assert_eq!(response.status, 200, "{path}");
        out.push((format!("{path} {headers:?}"), response.text()));
    }
    out
}

/// Waits for a refresh of each integration in `names` whose log line says `message`
/// ("refresh failed" or "refresh finished"), after line `from`.
async fn wait_refresh(output: &Output, from: usize, names: &[&str], message: &str) {
    for name in names {
        let line = output
            .wait_for(
                from,
                &[
                    &format!(" msg=\"{message}\" "),
                    &format!(" integration={name} "),
                ],
            )
            .await;
        assert!(!line.contains(" target="), "{line}");
    }
}

/// What each fault's refresh failure line must say: its reason, the parts of its error that a
/// budget never cuts (the operation, AWS's error code), and how it ends.
fn expected_failure(fault: &Behavior) -> (&'static str, &'static [&'static str], Answered) {
    match fault {
        Behavior::AccessDenied => (
            "access_denied",
            &["GetCostAndUsage: AccessDeniedException: User: arn:aws:iam::"],
            Answered::Status(400),
        ),
        Behavior::Throttled(_) => (
            "throttled",
            &["GetCostAndUsage: LimitExceededException: "],
            Answered::Status(400),
        ),
        Behavior::Currency(_) => (
            "unsupported_unit",
            &["Cost Explorer returned ", " in \"EUR\""],
            Answered::Nothing,
        ),
        Behavior::LoopingToken => (
            "bad_response",
            &["Cost Explorer returned a NextPageToken it had already returned"],
            Answered::Nothing,
        ),
        Behavior::ServerError => (
            "aws_error",
            &["GetCostAndUsage: InternalFailure: "],
            Answered::Status(500),
        ),
        Behavior::ServiceUnavailable => (
            "aws_error",
            &["GetCostAndUsage: ServiceUnavailable: "],
            Answered::Status(503),
        ),
        Behavior::MalformedJson => (
            "bad_response",
            &["malformed Cost Explorer response: page 1 of GetCostAndUsage"],
            Answered::RequestId,
        ),
        Behavior::TruncatedBody => (
            "bad_response",
            &["GetCostAndUsage: unreadable response: "],
            Answered::Status(200),
        ),
        Behavior::ExpiredToken => (
            "credentials",
            &["GetCostAndUsage: ExpiredTokenException: "],
            Answered::Status(400),
        ),
        Behavior::RefusedCredentials => (
            "credentials",
            &["GetCostAndUsage: UnrecognizedClientException: "],
            Answered::Status(400),
        ),
        Behavior::InvalidSignature => (
            "credentials",
            &["GetCostAndUsage: InvalidSignatureException: "],
            Answered::Status(400),
        ),
        Behavior::AssumeRoleDenied => (
            "credentials",
            &["GetCostAndUsage: no credentials: AssumeRole: AccessDenied: "],
            Answered::Status(403),
        ),
        other => panic!("no refresh failure expected of {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_output_at_trace_level_through_every_fault() {
    let today = chrono::Utc::now().date_naive();
    let sim = Simulator::builder()
        .account(PAYER_ACCOUNT, single_dataset(PAYER_ACCOUNT, today, 21))
        .account(
            WORKLOAD_ACCOUNT,
            single_dataset(WORKLOAD_ACCOUNT, today, 22),
        )
        .access_key(PAYER_KEY_ID, PAYER_SECRET, PAYER_ACCOUNT)
        .access_key(BASE_KEY_ID, EXPANDED_SECRET, "999999999999")
        .role(WORKLOAD_ACCOUNT, "CostExporter", Some(EXTERNAL_ID))
        // Shorter than the SDK's renewal buffer: every request assumes the role again, so that
        // many session tokens are issued (and AssumeRoleDenied meets an AssumeRole).
        .session_duration(Duration::from_secs(5))
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config(&sim)).unwrap();
    let mut child = Command::new(BIN)
        .arg("--config.file")
        .arg(&path)
        .args([
            "--web.listen-address",
            "127.0.0.1:0",
            "--log.level",
            "debug",
        ])
        .env("RUST_LOG", "trace")
        .env("ACE_SECRETS_TEST_SECRET", EXPANDED_SECRET)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = Output::default();
    output.collect(Stream::Stdout, child.stdout.take().unwrap());
    output.collect(Stream::Stderr, child.stderr.take().unwrap());
    let exporter = Exporter { child, output };
    let output = exporter.output.clone();

    let listening = output.wait_for(0, &[" msg=listening "]).await;
    assert!(!listening.contains(" target="), "{listening}");
    let addr: SocketAddr = listening
        .split(' ')
        .find_map(|part| part.strip_prefix("address="))
        .unwrap()
        .parse()
        .unwrap();
    let both = ["payer", "workload"];
    wait_refresh(&output, 0, &both, "refresh finished").await;
    let mut served = pages(addr).await;
    let mut failure_lines = Vec::new();

    // Every fault mode of the simulator, on both accounts (STS's refusal concerns the assumed
    // role only). A hang longer than the SDK's timeouts (60 s a try) would take minutes to
    // fail: it is switched off once a request hangs, which ends the hanging answer, and the
    // refresh then succeeds (tests/faults.rs fails it with shortened timeouts).
    let faults = [
        Behavior::AccessDenied,
        Behavior::Throttled(usize::MAX),
        Behavior::Currency("EUR".into()),
        Behavior::LoopingToken,
        Behavior::ServerError,
        Behavior::ServiceUnavailable,
        Behavior::MalformedJson,
        Behavior::TruncatedBody,
        Behavior::ExpiredToken,
        Behavior::RefusedCredentials,
        Behavior::InvalidSignature,
        Behavior::AssumeRoleDenied,
        Behavior::Hang(Duration::from_secs(3600)),
    ];
    for fault in faults {
        let names: &[&str] = if fault == Behavior::AssumeRoleDenied {
            &["workload"]
        } else {
            &both
        };
        let accounts: &[&str] = if fault == Behavior::AssumeRoleDenied {
            &[WORKLOAD_ACCOUNT]
        } else {
            &[PAYER_ACCOUNT, WORKLOAD_ACCOUNT]
        };
        let from = output.len();
        for account in accounts {
            sim.set_behavior(account, fault.clone());
        }
        if matches!(fault, Behavior::Hang(_)) {
            let deadline = tokio::time::Instant::now() + WAIT;
            while sim.in_flight() == 0 {
                assert!(tokio::time::Instant::now() < deadline, "a request hangs");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            served.extend(pages(addr).await);
        } else {
            wait_refresh(&output, from, names, "refresh failed").await;
            served.extend(pages(addr).await);
        }
        let during = output.len();
        for account in accounts {
            sim.set_behavior(account, Behavior::Normal);
        }
        wait_refresh(&output, during, names, "refresh finished").await;
        // Every failure the fault caused is one line of at most 300 characters that names the
        // operation, AWS's error code, the HTTP status and the whole request id.
        if !matches!(fault, Behavior::Hang(_)) {
            let (reason, parts, answered) = expected_failure(&fault);
            let failed: Vec<String> = output.lines()[from..]
                .iter()
                .filter(|(_, l)| l.contains(" msg=\"refresh failed\" "))
                .map(|(_, l)| l.clone())
                .collect();
            assert!(failed.len() >= names.len(), "{fault:?}: {failed:#?}");
            for line in &failed {
                check_failure_line(line, reason, parts, answered, "");
            }
            failure_lines.extend(failed);
        }
    }
    let longest = failure_lines
        .iter()
        .max_by_key(|l| l.chars().count())
        .expect("failure lines");
    eprintln!(
        "{} refresh failure lines, the longest ({} characters):\n{longest}",
        failure_lines.len(),
        longest.chars().count()
    );
    served.extend(pages(addr).await);

    // Bad reloads with a secret in the file: a validation error and a YAML syntax error on the
    // secret's own line. The running configuration stays.
    let good = config(&sim);
    for bad in [
        good.replace(
            &format!("account_id: \"{WORKLOAD_ACCOUNT}\""),
            "account_id: \"12345\"",
        )
        .replace(PAYER_SECRET, RELOAD_SECRET),
        good.replace(PAYER_SECRET, &format!("\"{RELOAD_SECRET}")),
        good.replace(
            &format!("secret_access_key: {PAYER_SECRET}"),
            &format!("secret_access_key: [{RELOAD_SECRET}: {{"),
        ),
    ] {
        assert!(bad.contains(RELOAD_SECRET));
        std::fs::write(&path, bad).unwrap();
        let from = output.len();
        exporter.signal("HUP");
        output
            .wait_for(from, &[" msg=\"configuration reload failed"])
            .await;
    }
    std::fs::write(&path, &good).unwrap();
    let from = output.len();
    exporter.signal("HUP");
    output
        .wait_for(from, &[" msg=\"configuration reloaded\""])
        .await;
    let from = output.len();
    wait_refresh(&output, from, &both, "refresh finished").await;
    served.extend(pages(addr).await);

    // Stop it and read everything it wrote.
    exporter.signal("TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut exporter = exporter;
    loop {
        if exporter.child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "it stops on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The readers finish at the pipes' end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = output.lines();

    let sessions = sim.issued_sessions();
    assert!(
        sessions.len() >= 2,
        "the simulated STS issued sessions: {}",
        sessions.len()
    );
    let mut secrets: Vec<(String, String)> = [
        ("the static secret access key", PAYER_SECRET),
        ("the ${VAR}-expanded secret access key", EXPANDED_SECRET),
        ("the external id", EXTERNAL_ID),
        ("the secret in the refused files", RELOAD_SECRET),
    ]
    .iter()
    .map(|(what, value)| (what.to_string(), value.to_string()))
    .collect();
    for (id, secret, token) in &sessions {
        secrets.push((format!("the session token of {id}"), token.clone()));
        secrets.push((format!("the session secret of {id}"), secret.clone()));
    }
    let mut leaks = Vec::new();
    for (what, value) in &secrets {
        for (stream, line) in &lines {
            if line.contains(value.as_str()) {
                leaks.push(format!("{what} on {stream:?}: {line}"));
            }
        }
        for (page, body) in &served {
            if body.contains(value.as_str()) {
                leaks.push(format!("{what} in page {page}"));
            }
        }
    }
    // Access key ids: not at info level or above, nor in a page.
    let mut ids: Vec<String> = vec![PAYER_KEY_ID.into(), BASE_KEY_ID.into()];
    ids.extend(sessions.iter().map(|(id, _, _)| id.clone()));
    let mut ids_below_info = 0;
    for id in &ids {
        for (stream, line) in &lines {
            if !line.contains(id.as_str()) {
                continue;
            }
            if line.starts_with("ts=")
                && (line.contains(" level=debug ") || line.contains(" level=trace "))
            {
                ids_below_info += 1;
            } else {
                leaks.push(format!("access key id {id} on {stream:?}: {line}"));
            }
        }
        for (page, body) in &served {
            if body.contains(id.as_str()) {
                leaks.push(format!("access key id {id} in page {page}"));
            }
        }
    }
    let mut kinds = std::collections::BTreeMap::new();
    for leak in &leaks {
        let kind = leak.split([':']).next().unwrap_or_default().to_string();
        *kinds.entry(kind).or_insert(0) += 1;
    }
    let cut = |l: &String| l.chars().take(1500).collect::<String>();
    assert!(
        leaks.is_empty(),
        "{} leaks ({kinds:?}), the first ones:\n{}",
        leaks.len(),
        leaks
            .iter()
            .take(3)
            .map(cut)
            .collect::<Vec<_>>()
            .join("\n\n")
    );
    // The search saw the verbose output it is about: the SDK's and hyper's debug lines. Their
    // trace lines are cut by the binary's cap, whatever RUST_LOG says (at trace level the
    // SDK's orchestrator dumps the assume-role provider, external id included).
    let sdk_debug = lines
        .iter()
        .filter(|(_, l)| l.contains(" level=debug target=aws_smithy_runtime"))
        .count();
    assert!(sdk_debug > 100, "the SDK's debug lines: {sdk_debug}");
    assert!(
        lines
            .iter()
            .any(|(_, l)| l.contains(" level=debug target=hyper_util")),
        "hyper's debug lines"
    );
    let foreign_trace: Vec<&String> = lines
        .iter()
        .map(|(_, l)| l)
        .filter(|l| l.contains(" level=trace ") && l.contains(" target="))
        .collect();
    assert_eq!(
        foreign_trace.len(),
        0,
        "other crates' trace lines, the first: {:?}",
        foreign_trace.first().map(|l| cut(l))
    );
    eprintln!(
        "searched {} lines ({sdk_debug} of the SDK's debug lines) and {} pages for {} secrets; access key ids in {ids_below_info} debug/trace lines",
        lines.len(),
        served.len(),
        secrets.len()
    );
}
