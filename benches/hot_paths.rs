//! Micro-benchmarks of the hot paths: parsing a Cost Explorer page through the real SDK client,
//! building and encoding a snapshot, joining gzip pieces for a scrape, and a whole scrape.
//!
//! `cargo bench` runs them; `bench/run` measures the whole binary against nginx.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;

use aws_config::{BehaviorVersion, Region};
use aws_cost_exporter::aggregate::Table;
use aws_cost_exporter::config::{CostBasis, Integration};
use aws_cost_exporter::cost_explorer::{
    CostExplorer, Dimension, Granularity, GroupKey, Period, Query,
};
use aws_cost_exporter::exposition::{Format, GROUP_LEVEL, Piece, Run};
use aws_cost_exporter::metrics::Metrics;
use aws_cost_exporter::parts::costs::{CostData, DAILY, MONTH_TO_DATE};
use aws_cost_exporter::parts::{FAMILIES, index_of};
use aws_cost_exporter::server::{ServerState, respond};
use aws_cost_exporter::snapshot::{
    Block, Identity, IntegrationSnapshot, Names, SnapshotStore, table_block,
};
use aws_credential_types::Credentials;
use bytes::Bytes;
use chrono::NaiveDate;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

const BASES: [CostBasis; 3] = [
    CostBasis::Unblended,
    CostBasis::Amortized,
    CostBasis::NetUnblended,
];
const SERVICES: [&str; 6] = [
    "Amazon Elastic Compute Cloud - Compute",
    "Amazon Simple Storage Service",
    "Amazon Relational Database Service",
    "AWS Lambda",
    "AmazonCloudWatch",
    "Tax",
];

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 23).unwrap_or_default()
}

fn account(i: usize) -> String {
    format!("{:012}", 100_000_000_000 + i)
}

/// A GetCostAndUsage page of `groups` groups keyed (account, service), every basis.
fn page_json(groups: usize) -> String {
    let groups: Vec<serde_json::Value> = (0..groups)
        .map(|i| {
            let metrics: serde_json::Map<String, serde_json::Value> = BASES
                .iter()
                .map(|b| {
                    (
                        b.metric().to_string(),
                        serde_json::json!({"Amount": format!("{}.{:010}", i % 977, i * 7919 % 10_000_000_000), "Unit": "USD"}),
                    )
                })
                .collect();
            serde_json::json!({"Keys": [account(i / 6), SERVICES[i % 6]], "Metrics": metrics})
        })
        .collect();
    serde_json::json!({
        "GroupDefinitions": [{"Type": "DIMENSION", "Key": "LINKED_ACCOUNT"}, {"Type": "DIMENSION", "Key": "SERVICE"}],
        "ResultsByTime": [{"TimePeriod": {"Start": "2026-11-01", "End": "2026-11-24"}, "Total": {}, "Groups": groups, "Estimated": true}],
        "DimensionValueAttributes": [],
    })
    .to_string()
}

/// Serves `body` to every request on 127.0.0.1; returns the endpoint.
async fn canned_server(body: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let body = Bytes::from(body);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request| {
                    let body = body.clone();
                    async move {
                        let mut response = Response::new(Full::new(body));
                        response.headers_mut().insert(
                            "content-type",
                            HeaderValue::from_static("application/x-amz-json-1.1"),
                        );
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

fn parse_page(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let groups = 500;
    let endpoint = runtime.block_on(canned_server(page_json(groups)));
    let conf = aws_sdk_costexplorer::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIABENCH",
            "bench-secret",
            None,
            None,
            "bench",
        ))
        .endpoint_url(endpoint)
        .build();
    let ce = CostExplorer::new(aws_sdk_costexplorer::Client::from_conf(conf));
    let query = Query::cost(
        Granularity::Monthly,
        (
            NaiveDate::from_ymd_opt(2026, 11, 1).unwrap_or_default(),
            today(),
        ),
        vec![
            GroupKey::Dimension(Dimension::LinkedAccount),
            GroupKey::Dimension(Dimension::Service),
        ],
        vec![(Dimension::RecordType, vec!["Usage".into()])],
    );
    let mut group = c.benchmark_group("parse_page");
    group.throughput(Throughput::Elements(groups as u64));
    group.bench_function("500_groups_3_bases_over_loopback", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut table = Table::<3>::new(BASES.len());
                ce.query(&query, &BASES, |_, keys, amounts| {
                    table.add([keys[0], keys[1], "Usage"], amounts);
                    Ok(())
                })
                .await
                .expect("page");
                black_box(table.len())
            })
        })
    });
    group.finish();
}

/// Costs for about `series` series over two families and three bases.
fn costs(series: usize) -> CostData {
    let keys = series / 2 / BASES.len();
    let mut costs = CostData::new(BASES.len());
    for i in 0..keys {
        let id = account(i / 12);
        let key = [
            id.as_str(),
            SERVICES[i % 6],
            if i % 12 < 6 { "Usage" } else { "Credit" },
        ];
        let amount = (i % 1000) as f64 * 1.234_567_890_1;
        costs.daily.add(key, &[amount, amount * 0.9, amount * 0.97]);
        costs
            .month
            .add(key, &[amount * 23.0, amount * 20.7, amount * 22.31]);
    }
    costs
}

fn integration() -> Integration {
    let mut integration = Integration::new("payer", "111111111111");
    integration.cost_basis = BASES.to_vec();
    integration
}

/// The snapshot of `costs`: their two families encoded and compressed as the costs part
/// encodes them, the other families empty.
fn snapshot(integration: &Integration, costs: &CostData) -> IntegrationSnapshot {
    let names = Names::default();
    let labels = ["account_id", "aws_service", "charge_type"];
    let mut blocks = vec![Block::default(); FAMILIES.len()];
    let identity = Identity::of(integration);
    let target = (&identity, &integration.cost_basis[..]);
    for (family, table) in [(DAILY, &costs.daily), (MONTH_TO_DATE, &costs.month)] {
        blocks[index_of(&family)] = table_block(&family, target, table, labels, &names, 0);
    }
    let period = Period::new(today(), 1);
    IntegrationSnapshot::new(
        integration.name.clone(),
        period,
        chrono::Utc::now(),
        aws_cost_exporter::parts::layout(integration),
        blocks,
    )
}

fn build_snapshot(c: &mut Criterion) {
    let data = costs(100_000);
    let integration = integration();
    let mut group = c.benchmark_group("build_snapshot");
    group.sample_size(10);
    group.throughput(Throughput::Elements(100_000));
    group.bench_function("100k_series_encode_and_deflate", |b| {
        b.iter(|| black_box(snapshot(&integration, &data)))
    });
    group.finish();
}

fn state(series: usize) -> ServerState {
    let store = Arc::new(SnapshotStore::new(vec!["payer".into()]));
    store.publish(Arc::new(snapshot(&integration(), &costs(series))));
    ServerState::new(store, Arc::new(Metrics::new()), "/metrics".into())
}

fn gzip_join(c: &mut Criterion) {
    let state = state(100_000);
    let rendered = state.store.rendered();
    let own = state.metrics.encode(Format::Classic);
    c.bench_function("gzip_join/100k_series_page", |b| {
        b.iter(|| {
            let mut page = Run::default();
            page.push(&Piece::compressed(own.clone(), GROUP_LEVEL));
            page.append(rendered.run(Format::Classic));
            black_box(page.gzip())
        })
    });
}

fn scrape(c: &mut Criterion) {
    let state = state(100_000);
    let mut group = c.benchmark_group("scrape_100k_series");
    for (name, headers) in [
        ("plain", vec![]),
        ("gzip", vec![("accept-encoding", "gzip")]),
        (
            "openmetrics",
            vec![("accept", "application/openmetrics-text; version=1.0.0")],
        ),
    ] {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(k, HeaderValue::from_static(v));
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                let response = respond(&state, &Method::GET, "/metrics", &map);
                black_box(http_body::Body::size_hint(response.body()).exact())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse_page, build_snapshot, gzip_join, scrape);
criterion_main!(benches);
