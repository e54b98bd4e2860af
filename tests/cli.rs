//! Tests of the binary itself: flags, exit status, the demo, logs and graceful shutdown.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::running::{BIN, Running};
use common::*;

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ace-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `--config.check` on `path` with extra environment variables.
fn config_check(path: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
    Command::new(BIN)
        .args(["--config.check", "--config.file"])
        .arg(path)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn config_check_accepts_a_valid_file_without_calling_aws() {
    // The endpoint is a closed port: --config.check must not call it.
    let path = temp_file(
        "valid",
        "integrations:\n  - name: payer\n    account_id: \"123456789012\"\n    endpoint_url: http://127.0.0.1:9\n",
    );
    let out = config_check(&path, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "configuration OK: 1 integration(s): payer\n"
    );
}

#[test]
fn config_check_accepts_the_shipped_infrawallet_example() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/app-config.yaml");
    let out = config_check(
        &path,
        &[
            ("SANDBOX_AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("SANDBOX_AWS_SECRET_ACCESS_KEY", "example-secret"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "configuration OK: 2 integration(s): payer, sandbox\n"
    );
}

#[test]
fn bad_config_is_refused_with_file_line_column_and_key() {
    let path = temp_file(
        "invalid",
        "integrations:\n  - name: payer\n    account_id: \"12345\"\n    secret_access_key: hunter2\n",
    );
    for extra in [&["--config.check"][..], &[][..]] {
        let out = Command::new(BIN)
            .args(extra)
            .arg("--config.file")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "error: invalid configuration {} at line 3 column 17: integrations[0].account_id: \"12345\" is not an AWS account id",
                path.display()
            )),
            "{stderr}"
        );
        assert!(!stderr.contains("hunter2"));
    }
    let out = Command::new(BIN)
        .args([
            "--config.check",
            "--config.file",
            "/nonexistent/aws-cost-exporter.yaml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("/nonexistent/aws-cost-exporter.yaml: cannot read file")
    );
}

/// A bad view stops the start itself (not only `--config.check`): one line naming the file,
/// line, column and key, exit status 1, nothing served.
#[test]
fn a_bad_view_stops_the_start_at_its_key() {
    let path = temp_file(
        "bad-view",
        "integrations:\n  - name: payer\n    account_id: \"111111111111\"\n    labels: {team: platform}\n    views:\n      - name: by_team\n        group_by:\n          - cost_category: Team\n            label: team\n",
    );
    let out = Command::new(BIN)
        .args(["--web.listen-address", "127.0.0.1:0", "--config.file"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect::<Vec<_>>(),
        [format!(
            "error: invalid configuration {} at line 9 column 20: integrations[0].views[0].group_by[0].label: \"team\" is a static label of the integration (labels); choose another",
            path.display()
        )],
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");
}

#[test]
fn an_unusable_storage_path_stops_the_start_and_is_named() {
    let config = temp_file(
        "storage",
        "integrations:\n  - name: payer\n    account_id: \"123456789012\"\n    endpoint_url: http://127.0.0.1:9\n",
    );
    // A file where the directory should be.
    let file = config.with_file_name("not-a-directory");
    std::fs::write(&file, "").unwrap();
    let out = Command::new(BIN)
        .args(["--web.listen-address", "127.0.0.1:0", "--config.file"])
        .arg(&config)
        .arg("--storage.path")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        message.starts_with(&format!("error: --storage.path {}: ", file.display())),
        "{stderr}"
    );
    assert_eq!(
        message.matches("os error").count(),
        1,
        "said once: {message}"
    );
}

#[test]
fn unset_environment_variables_are_named() {
    let path = temp_file(
        "env",
        "integrations:\n  - name: payer\n    account_id: \"123456789012\"\n    access_key_id: ${ACE_TEST_UNSET_KEY}\n    secret_access_key: x\n",
    );
    let out = Command::new(BIN)
        .args(["--config.check", "--config.file"])
        .arg(&path)
        .env_remove("ACE_TEST_UNSET_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "integrations[0].access_key_id: environment variable ACE_TEST_UNSET_KEY is not set"
        ),
        "{stderr}"
    );
}

#[test]
fn refresh_max_concurrency_must_be_at_least_one() {
    let path = temp_file(
        "concurrency",
        "integrations:\n  - name: payer\n    account_id: \"123456789012\"\n",
    );
    let run = |value: &str| {
        Command::new(BIN)
            .args([
                "--config.check",
                "--refresh.max-concurrency",
                value,
                "--config.file",
            ])
            .arg(&path)
            .output()
            .unwrap()
    };
    let refused = run("0");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--refresh.max-concurrency") && stderr.contains("at least 1"),
        "{stderr}"
    );
    let accepted = run("2");
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
}

fn logfmt_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|part| part.strip_prefix(&format!("{key}=")))
}

#[tokio::test]
async fn demo_serves_both_integrations_without_leaking_secrets_and_stops_on_sigterm() {
    let mut demo = Running::start(&[
        "--demo",
        "--web.listen-address",
        "127.0.0.1:0",
        "--log.level",
        "debug",
    ]);
    let listening = demo.wait_for_line(|l| l.contains(" msg=listening "));
    let addr: SocketAddr = logfmt_value(&listening, "address")
        .unwrap()
        .parse()
        .unwrap();
    for name in ["payer", "workload"] {
        let seen =
            |l: &str| l.contains("refresh finished") && l.contains(&format!("integration={name} "));
        if !demo.log.iter().any(|l| seen(l)) {
            demo.wait_for_line(seen);
        }
    }
    let metrics = get(addr, "/metrics").await.text();
    let samples = parse_exposition(&metrics);
    for name in ["payer", "workload"] {
        assert_eq!(refresh_success(&samples, name), Some(1.0));
        let series = samples
            .iter()
            .filter(|s| s.name == "aws_cost_month_to_date_usd" && s.label("integration") == name)
            .count();
        assert!(series > 10, "{name}: {series} series");
    }
    // The demo shows the charge types, negative credits, Estimated days and pagination.
    for charge_type in [
        "Usage",
        "Tax",
        "Credit",
        "SavingsPlanCoveredUsage",
        "Support",
    ] {
        assert!(
            samples
                .iter()
                .any(|s| s.label("charge_type") == charge_type),
            "{charge_type}"
        );
    }
    assert!(
        samples
            .iter()
            .any(|s| s.label("charge_type") == "Credit" && s.value < 0.0)
    );
    assert_eq!(
        value_of(&samples, "aws_cost_estimated", &[("period", "daily")]),
        Some(1.0)
    );
    let payer_requests = value_of(
        &samples,
        "aws_cost_api_requests_total",
        &[("integration", "payer"), ("operation", "GetCostAndUsage")],
    )
    .unwrap();
    assert!(payer_requests > 5.0, "the demo pages: {payer_requests}");
    // Every feature is on show: every cost family has samples.
    for family in aws_cost_exporter::parts::FAMILIES.iter() {
        assert!(
            samples.iter().any(|s| s.name == family.name),
            "{} missing from the demo",
            family.name
        );
    }
    // Commitments: a plan ending within 30 days and one far from it, an under-used plan and
    // reservation; anomalies: an open one and a closed one.
    let now = chrono::Utc::now().timestamp() as f64;
    let days_left = |name: &str| -> Vec<f64> {
        samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| (s.value - now) / 86_400.0)
            .collect()
    };
    for name in [
        "aws_cost_savings_plan_end_timestamp_seconds",
        "aws_cost_reservation_end_timestamp_seconds",
    ] {
        let days = days_left(name);
        assert!(
            days.iter().any(|d| *d > 0.0 && *d < 30.0),
            "{name}: {days:?}"
        );
        assert!(days.iter().any(|d| *d > 365.0), "{name}: {days:?}");
    }
    for name in [
        "aws_cost_savings_plan_utilization_ratio",
        "aws_cost_reservation_subscription_utilization_ratio",
    ] {
        assert!(
            samples.iter().any(|s| s.name == name && s.value < 0.8),
            "{name}: no under-used commitment"
        );
    }
    let open: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == "aws_cost_anomaly_open")
        .map(|s| s.value)
        .collect();
    assert!(open.contains(&1.0) && open.contains(&0.0), "{open:?}");
    assert!(
        samples
            .iter()
            .any(|s| s.label("resource_id") == "__other__")
    );
    assert_eq!(
        value_of(
            &samples,
            "aws_cost_account_info",
            &[("account_id", "666666666666")]
        ),
        Some(1.0),
        "the idle member is named by Organizations"
    );
    // Every commitment and anomaly operation but GetSavingsPlansUtilization, whose aggregate
    // the per-plan answer carries.
    let commitment_operations = aws_cost_simulator::commitments::OPERATIONS
        .iter()
        .filter(|op| **op != "GetSavingsPlansUtilization");
    for operation in [
        "GetCostAndUsageWithResources",
        "GetCostForecast",
        "ListAccounts",
        "AssumeRole",
    ]
    .iter()
    .chain(commitment_operations)
    {
        assert!(
            samples
                .iter()
                .any(|s| s.name == "aws_cost_api_requests_total"
                    && s.label("operation") == *operation),
            "{operation}"
        );
    }
    let landing = get(addr, "/").await.text();

    // SIGTERM: graceful shutdown, exit 0.
    let status = Command::new("kill")
        .args(["-TERM", &demo.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = demo.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    demo.drain();
    let log = demo.log.join("\n");
    assert!(log.contains(" msg=\"shutting down\""), "{log}");

    for secret in [
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
        "simulated-secret-",
        "simulated-session-token-",
    ] {
        assert!(!metrics.contains(secret), "{secret} in /metrics");
        assert!(!landing.contains(secret), "{secret} on the landing page");
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

#[tokio::test]
async fn json_logs_count_every_request_of_a_refresh() {
    let mut demo = Running::start(&[
        "--demo",
        "--web.listen-address",
        "127.0.0.1:0",
        "--log.format",
        "json",
    ]);
    let parse =
        |line: &str| -> serde_json::Value { serde_json::from_str(line).expect("a JSON log line") };
    let listening = parse(&demo.wait_for_line(|l| l.contains("\"listening\"")));
    let addr: SocketAddr = listening["address"].as_str().unwrap().parse().unwrap();
    let mut refreshes = BTreeMap::new();
    while refreshes.len() < 2 {
        let line = parse(&demo.wait_for_line(|l| l.contains("refresh finished")));
        // The message says the outcome: no field repeats it.
        assert_eq!(line["message"], "refresh finished");
        assert_eq!(line.get("outcome"), None, "{line}");
        assert!(line["series"].as_u64().unwrap() > 10);
        assert!(line["duration_seconds"].as_f64().is_some());
        refreshes.insert(
            line["integration"].as_str().unwrap().to_string(),
            line["requests"].as_u64().unwrap(),
        );
    }
    // The log line's requests are every request the refresh made, as the counter has them.
    let samples = parse_exposition(&get(addr, "/metrics").await.text());
    for (integration, logged) in refreshes {
        let counted: f64 = samples
            .iter()
            .filter(|s| {
                s.name == "aws_cost_api_requests_total" && s.label("integration") == integration
            })
            .map(|s| s.value)
            .sum();
        assert_eq!(logged as f64, counted, "{integration}");
    }
}

#[tokio::test]
async fn sighup_reloads_the_configuration_file() {
    let today = chrono::Utc::now().date_naive();
    let sim = aws_cost_simulator::Simulator::builder()
        .account("111111111111", org_dataset(today, 3))
        .access_key(PAYER_KEY.0, PAYER_KEY.1, "111111111111")
        .account("222222222222", single_dataset("222222222222", today, 5))
        .access_key("AKIATESTSOLO1EXAMPLE", "solo-secret", "222222222222")
        .start()
        .await
        .unwrap();
    let payer = format!(
        "  - name: payer\n    account_id: \"111111111111\"\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {}\n",
        PAYER_KEY.0,
        PAYER_KEY.1,
        sim.endpoint()
    );
    let solo = format!(
        "  - name: solo\n    account_id: \"222222222222\"\n    access_key_id: AKIATESTSOLO1EXAMPLE\n    secret_access_key: solo-secret\n    endpoint_url: {}\n",
        sim.endpoint()
    );
    let path = temp_file("reload", &format!("integrations:\n{payer}"));
    let config = path.to_string_lossy().into_owned();
    let mut exporter = Running::start(&[
        "--config.file",
        &config,
        "--web.listen-address",
        "127.0.0.1:0",
    ]);
    let listening = exporter.wait_for_line(|l| l.contains(" msg=listening "));
    let addr: SocketAddr = logfmt_value(&listening, "address")
        .unwrap()
        .parse()
        .unwrap();
    wait_for_refresh(addr, &["payer"]).await;

    std::fs::write(&path, format!("integrations:\n{payer}{solo}")).unwrap();
    exporter.hangup();
    let line = exporter.wait_for_line(|l| l.contains("configuration reloaded"));
    assert!(
        line.contains("added=solo") && line.contains("unchanged=payer"),
        "{line}"
    );
    let samples = wait_for_refresh(addr, &["payer", "solo"]).await;
    assert_eq!(
        value_of(
            &samples,
            "aws_cost_exporter_config_last_reload_successful",
            &[]
        ),
        Some(1.0)
    );

    // A broken file is refused; the running configuration stays.
    std::fs::write(
        &path,
        "integrations:\n  - name: solo\n    account_id: \"1\"\n",
    )
    .unwrap();
    exporter.hangup();
    let line = exporter.wait_for_line(|l| l.contains("configuration reload failed"));
    assert!(line.contains("line 3 column 17"), "{line}");
    let samples = wait_for(addr, "the failed reload", |s| {
        value_of(s, "aws_cost_exporter_config_last_reload_successful", &[]) == Some(0.0)
    })
    .await;
    assert_eq!(refresh_success(&samples, "solo"), Some(1.0));
    assert_eq!(refresh_success(&samples, "payer"), Some(1.0));
    assert!(
        exporter.child.try_wait().unwrap().is_none(),
        "still running"
    );
}

#[test]
fn demo_publications_must_be_times_of_day() {
    let out = Command::new(BIN)
        .args(["--demo", "--demo.publications", "02:00,25:00"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--demo.publications") && stderr.contains("\"25:00\" is not a time of day"),
        "{stderr}"
    );
}

#[test]
fn a_storage_url_other_than_s3_is_refused_not_taken_for_a_directory() {
    let path = temp_file(
        "storage-url",
        "integrations:\n  - name: payer\n    account_id: \"123456789012\"\n",
    );
    let dir = std::env::temp_dir().join(format!("ace-storage-url-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let refused = |args: &[&str], expected: &str| {
        let out = Command::new(BIN)
            .current_dir(&dir)
            .arg("--config.check")
            .args(args)
            .arg("--config.file")
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    };
    refused(
        &["--storage.path", "gs://bucket/prefix"],
        "gs:// is not a local directory, and S3 (s3://BUCKET/PREFIX) is the only shared storage",
    );
    refused(
        &["--storage.path", "s3://Not_A_Bucket/x"],
        "\"s3://Not_A_Bucket/x\" does not name an S3 bucket",
    );
    refused(
        &[
            "--storage.lease-duration",
            "2s",
            "--storage.poll-interval",
            "5s",
        ],
        "--storage.poll-interval must be more than 0s and at most half of --storage.lease-duration (2s)",
    );
    refused(
        &["--storage.replica-id", "a b"],
        "expected 1 to 128 letters",
    );
    assert!(
        !dir.join("gs:").exists() && !dir.join("s3:").exists(),
        "no directory named after the scheme"
    );
    // An s3:// URL is shared storage, checked when the exporter starts.
    let out = Command::new(BIN)
        .current_dir(&dir)
        .args([
            "--config.check",
            "--storage.path",
            "s3://cost-records/team",
            "--config.file",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
