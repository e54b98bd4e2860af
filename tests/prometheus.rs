//! The exposition checked by the real tools: `promtool check metrics` on the classic format,
//! gzip decoded as exactly one member by Python's zlib and by `curl --compressed`, and a real
//! Prometheus ingesting both formats with gzip (through proxies that note the encoding served;
//! the classic one asks only for text/plain, since Prometheus prefers OpenMetrics).
//!
//! Needs `prometheus` and `promtool` (Debian's `prometheus` package), `python3` and `curl`.
//! Without them the tests say so and pass, unless `AWS_COST_EXPORTER_E2E=required` (as
//! `.ci/run` sets), when they fail.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_cost_simulator::CostMetric;
use chrono::{Datelike, Days, Utc};
use common::*;
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

/// The path of a tool, or `None` when it is missing and the end-to-end tests are optional.
fn tool(name: &str) -> Option<String> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
            .map(|path| path.to_string_lossy().into_owned())
    });
    if found.is_none() {
        if std::env::var("AWS_COST_EXPORTER_E2E").as_deref() == Ok("required") {
            panic!("{name} is required (AWS_COST_EXPORTER_E2E=required) but not on PATH");
        }
        eprintln!("skipping: {name} is not installed");
    }
    found
}

/// The `Content-Encoding` of every response a proxy forwarded.
type Encodings = Arc<Mutex<Vec<String>>>;

/// Forwards every request to `target` with the client's `Accept-Encoding`, and its `Accept`
/// unless `accept` replaces it (Prometheus prefers OpenMetrics; the classic job asks for text
/// only), passing the response through untouched and noting its `Content-Encoding`.
async fn proxy(target: SocketAddr, accept: Option<&'static str>) -> (SocketAddr, Encodings) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let encodings = Encodings::default();
    let seen = encodings.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let header = |name: &str| {
                            req.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string()
                        };
                        let client_accept = header("accept");
                        let encoding = header("accept-encoding");
                        let upstream = request(
                            target,
                            Method::GET,
                            req.uri().path(),
                            &[
                                ("accept", accept.unwrap_or(&client_accept)),
                                ("accept-encoding", &encoding),
                            ],
                        )
                        .await;
                        let served = upstream
                            .headers
                            .get("content-encoding")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("identity")
                            .to_string();
                        seen.lock().unwrap().push(served);
                        let mut response = Response::new(Full::new(upstream.body));
                        *response.status_mut() = upstream.status;
                        *response.headers_mut() = upstream.headers;
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, encodings)
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn query(prometheus: SocketAddr, promql: &str) -> Vec<Value> {
    let encoded: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", promql)
        .finish();
    // Prometheus may still be starting: no answer reads as no result.
    let Ok(response) = try_request(
        prometheus,
        Method::GET,
        &format!("/api/v1/query?{encoded}"),
        &[],
    )
    .await
    else {
        return Vec::new();
    };
    let value: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    value["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn by_job(results: &[Value]) -> BTreeMap<String, f64> {
    results
        .iter()
        .map(|r| {
            (
                r["metric"]["job"].as_str().unwrap_or_default().to_string(),
                r["value"][1]
                    .as_str()
                    .unwrap_or("NaN")
                    .parse()
                    .unwrap_or(f64::NAN),
            )
        })
        .collect()
}

#[tokio::test]
async fn promtool_accepts_the_classic_format() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let today = date(2026, 11, 23);
    let sim = org_simulator(today, 500).await;
    let yaml = format!(
        "integrations:\n  - name: payer\n    account_id: \"111111111111\"\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {}\n    cost_basis: [unblended, amortized]\n",
        PAYER_KEY.0,
        PAYER_KEY.1,
        sim.endpoint()
    );
    let exporter = start_exporter(parse_config(&yaml), today).await;
    wait_for_refresh(exporter.local_addr(), &["payer"]).await;
    let body = get(exporter.local_addr(), "/metrics").await.body;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "no lint findings"
    );
    exporter.shutdown().await;
}

#[tokio::test]
async fn prometheus_ingests_both_formats() {
    let Some(prometheus_bin) = tool("prometheus") else {
        return;
    };
    // Real time here: Prometheus stores samples at its own wall clock.
    let today = Utc::now().date_naive();
    let sim = org_simulator(today, 50).await;
    let yaml = format!(
        "integrations:\n  - name: payer\n    account_id: \"111111111111\"\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {}\n",
        PAYER_KEY.0,
        PAYER_KEY.1,
        sim.endpoint()
    );
    let exporter = start_exporter(parse_config(&yaml), today).await;
    let exporter_addr = exporter.local_addr();
    let samples = wait_for_refresh(exporter_addr, &["payer"]).await;
    let series = samples
        .iter()
        .filter(|s| s.name == "aws_cost_daily_usd")
        .count() as f64;
    let (openmetrics_proxy, openmetrics_encodings) = proxy(exporter_addr, None).await;
    let (classic_proxy, classic_encodings) =
        proxy(exporter_addr, Some("text/plain;version=0.0.4")).await;

    let dir = std::env::temp_dir().join(format!("ace-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: openmetrics\n    static_configs:\n      - targets: ['{openmetrics_proxy}']\n  - job_name: classic\n    static_configs:\n      - targets: ['{classic_proxy}']\n"
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prometheus: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _server = KillOnDrop(
        Command::new(prometheus_bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={prometheus}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Both jobs up with every series, within 60 s.
    let mut counts = BTreeMap::new();
    for _ in 0..240 {
        counts = by_job(&query(prometheus, "count by (job) (aws_cost_daily_usd)").await);
        if counts.len() == 2 && counts.values().all(|c| *c == series) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(counts.get("openmetrics"), Some(&series), "{counts:?}");
    assert_eq!(counts.get("classic"), Some(&series), "{counts:?}");
    let up = by_job(&query(prometheus, "up").await);
    assert_eq!(up.get("openmetrics"), Some(&1.0));
    assert_eq!(up.get("classic"), Some(&1.0));

    // Values survive ingestion exactly, in both formats.
    let dataset = sim.dataset("111111111111").unwrap();
    let month_start = today.with_day(1).unwrap();
    let expected = dataset.total(CostMetric::Unblended, |r| {
        r.day >= month_start && r.day <= today
    });
    let sums = by_job(&query(prometheus, "sum by (job) (aws_cost_month_to_date_usd)").await);
    for job in ["openmetrics", "classic"] {
        assert_close(sums[job], expected, job);
    }
    let data_day = (today - Days::new(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp() as f64;
    let days = by_job(&query(prometheus, "aws_cost_data_day_timestamp_seconds").await);
    assert_eq!(days.get("openmetrics"), Some(&data_day));
    assert_eq!(days.get("classic"), Some(&data_day));
    // A label value with a quote, a backslash and a newline arrives intact.
    let names = query(
        prometheus,
        "count by (job, account_name) (aws_cost_daily_usd)",
    )
    .await;
    for job in ["openmetrics", "classic"] {
        assert!(
            names
                .iter()
                .any(|r| r["metric"]["job"] == job && r["metric"]["account_name"] == ORG[3].1),
            "{job}: {names:?}"
        );
    }
    // The counter keeps its _total name either way.
    let requests = by_job(&query(prometheus, "sum by (job) (aws_cost_api_requests_total)").await);
    assert_eq!(requests.len(), 2, "{requests:?}");
    // Prometheus asked for gzip, and read the exporter's joined gzip member, in both formats.
    for (job, encodings) in [
        ("openmetrics", &openmetrics_encodings),
        ("classic", &classic_encodings),
    ] {
        let encodings = encodings.lock().unwrap().clone();
        assert!(
            !encodings.is_empty() && encodings.iter().all(|e| e == "gzip"),
            "{job}: {encodings:?}"
        );
    }
    exporter.shutdown().await;
    drop(_server);
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs `program` with `args` off the test's runtime (which serves the exporter the program
/// may talk to), returning its stdout; panics with its stderr on failure. Bounded: a program
/// still running after a minute is killed.
async fn run(program: &str, args: &[&str]) -> Vec<u8> {
    let mut command = Command::new("timeout");
    command.arg("60").arg(program).args(args);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Decodes gzip with Python's zlib, which must reach the end of exactly one member with no
/// bytes left over.
const ONE_MEMBER: &str = "import sys, zlib
data = open(sys.argv[1], 'rb').read()
d = zlib.decompressobj(wbits=31)
out = d.decompress(data) + d.flush()
assert d.eof, 'the gzip member does not end'
assert d.unused_data == b'', f'{len(d.unused_data)} bytes after the first member'
sys.stdout.buffer.write(out)";

#[tokio::test]
async fn gzip_is_one_member_that_python_and_curl_read() {
    let (Some(python), Some(curl)) = (tool("python3"), tool("curl")) else {
        return;
    };
    let today = date(2026, 11, 23);
    let sim = org_simulator(today, 500).await;
    let yaml = format!(
        "integrations:\n  - name: payer\n    account_id: \"111111111111\"\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {}\n    cost_basis: [unblended, amortized]\n    tags: [team]\n",
        PAYER_KEY.0,
        PAYER_KEY.1,
        sim.endpoint()
    );
    let exporter = start_exporter(parse_config(&yaml), today).await;
    let addr = exporter.local_addr();
    wait_for_refresh(addr, &["payer"]).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{addr}/metrics");
    for accept in ["text/plain", "application/openmetrics-text; version=1.0.0"] {
        let plain = request(addr, Method::GET, "/metrics", &[("accept", accept)]).await;
        let gzip = request(
            addr,
            Method::GET,
            "/metrics",
            &[("accept", accept), ("accept-encoding", "gzip")],
        )
        .await;
        assert_eq!(gzip.headers["content-encoding"], "gzip");
        assert_eq!(
            gzip.headers["content-length"],
            gzip.body.len().to_string().as_str()
        );
        let file = dir.path().join("body.gz");
        std::fs::write(&file, &gzip.body).unwrap();
        let decoded = run(&python, &["-c", ONE_MEMBER, file.to_str().unwrap()]).await;
        assert_eq!(decoded, plain.body, "{accept}: python");
        let curled = run(
            &curl,
            &[
                "-sS",
                "--fail",
                "--compressed",
                "-H",
                &format!("Accept: {accept}"),
                &url,
            ],
        )
        .await;
        assert_eq!(curled, plain.body, "{accept}: curl --compressed");
    }
    exporter.shutdown().await;
}
