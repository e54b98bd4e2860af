//! The simulator with a publication schedule, through its HTTP handler: what each
//! publication changes, exactly, and that nothing changes between publications.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use http_body_util::Full;

use super::*;
use crate::DatasetSpec;
use crate::dataset::UNITS_PER_USD;

const KEY: &str = "AKIATESTPAYR1EXAMPLE";
const PAYER: &str = "111111111111";

const ORG: &[(&str, &str)] = &[
    ("111111111111", "Management"),
    ("333333333333", "Production"),
    ("444444444444", "Staging"),
    ("555555555555", "Data Lake"),
];

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, d).unwrap_or_default()
}

fn at(d: u32, h: u32, m: u32, s: u32) -> DateTime<Utc> {
    day(d).and_hms_opt(h, m, s).unwrap_or_default().and_utc()
}

/// Final amounts through the 24th (a partial day, as generated), from the 1st of October.
fn base() -> Dataset {
    Dataset::generate_with_cost_categories(
        &DatasetSpec {
            seed: 17,
            accounts: ORG,
            today: day(24),
            history_days: 54,
            estimated_days: 2,
            scale: 1.0,
            idle_accounts: &[],
        },
        &crate::demo_cost_categories(ORG),
    )
}

/// A simulator's state with the default schedule, its clock at `now`.
fn state(page_size: usize, publications: Option<Publications>, now: DateTime<Utc>) -> State {
    let builder = Simulator::builder()
        .account(PAYER, base())
        .access_key(KEY, "secret", PAYER)
        .resource_level_data(PAYER)
        .page_size(page_size)
        .clock(fixed_clock(now));
    match publications {
        Some(p) => builder.publications(p).state,
        None => builder.state,
    }
}

fn set_time(state: &State, now: DateTime<Utc>) {
    set_clock(state, fixed_clock(now));
    // Answers are computed afresh, not served from the cache.
    if let Ok(mut cache) = state.cache.lock() {
        cache.queries.clear();
    }
}

async fn raw(state: &State, operation: &str, body: &Value) -> (u16, Bytes) {
    let request = Request::post("/")
        .header(
            header::AUTHORIZATION,
            format!(
                "AWS4-HMAC-SHA256 Credential={KEY}/20261123/us-east-1/ce/aws4_request, \
                 SignedHeaders=host;x-amz-target, Signature=00"
            ),
        )
        .header(
            "x-amz-target",
            format!("AWSInsightsIndexService.{operation}"),
        )
        .body(Full::new(Bytes::from(body.to_string())));
    let Ok(request) = request else {
        panic!("request");
    };
    let response = handle(state, request).await;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, body)
}

/// Every page's body of a query, following tokens.
async fn bodies(state: &State, operation: &str, request: &Value) -> Vec<Bytes> {
    let mut request = request.clone();
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let (status, body) = raw(state, operation, &request).await;
        assert_eq!(status, 200, "{operation} {request}: {body:?}");
        let page: Value = serde_json::from_slice(&body).unwrap_or_default();
        out.push(body);
        match page.get("NextPageToken") {
            Some(token) => request["NextPageToken"] = token.clone(),
            None => return out,
        }
    }
    panic!("paging does not end");
}

fn pages(bodies: &[Bytes]) -> Vec<Value> {
    bodies
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap_or_default())
        .collect()
}

fn query(start: u32, end: u32, granularity: &str, group_by: &[(&str, &str)]) -> Value {
    let group_by: Vec<Value> = group_by
        .iter()
        .map(|(kind, key)| json!({"Type": kind, "Key": key}))
        .collect();
    json!({
        "TimePeriod": {"Start": day(start).to_string(), "End": day(end).to_string()},
        "Granularity": granularity,
        "Metrics": ["UnblendedCost", "AmortizedCost", "NetAmortizedCost"],
        "GroupBy": group_by,
    })
}

/// An amount as Cost Explorer writes it, in exact 1e-10 USD units.
fn units(amount: &str) -> i128 {
    let (mantissa, exponent) = match amount.split_once('E') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (amount, 0),
    };
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: i128 = format!("{whole}{fraction}").parse().unwrap_or(0);
    let shift = 10 + exponent - fraction.len() as i32;
    assert!(shift >= 0, "{amount} finer than 1e-10");
    let value = digits * 10_i128.pow(shift.unsigned_abs());
    if negative { -value } else { value }
}

const METRICS: [&str; 3] = ["UnblendedCost", "AmortizedCost", "NetAmortizedCost"];

type Sums = [i128; 3];

/// Per period start: (Estimated, the ungrouped total or the sum of the groups, per metric of
/// [`METRICS`]), over every page.
fn by_period(pages: &[Value]) -> BTreeMap<String, (bool, Sums)> {
    let mut out: BTreeMap<String, (bool, Sums)> = BTreeMap::new();
    for page in pages {
        for result in page["ResultsByTime"].as_array().into_iter().flatten() {
            let start = result["TimePeriod"]["Start"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let estimated = result["Estimated"].as_bool().unwrap_or_default();
            let entry = out.entry(start).or_insert((estimated, [0; 3]));
            assert_eq!(entry.0, estimated);
            let metrics: Vec<&Value> = match result["Groups"].as_array() {
                Some(groups) if !groups.is_empty() => {
                    groups.iter().map(|g| &g["Metrics"]).collect()
                }
                _ => vec![&result["Total"]],
            };
            for metrics in metrics {
                for (sum, name) in entry.1.iter_mut().zip(METRICS) {
                    *sum += metrics[name]["Amount"].as_str().map_or(0, units);
                }
            }
        }
    }
    out
}

/// The exact sums of `rows` in [`METRICS`]' bases, each amount scaled by `m / 5` (the default
/// schedule) first.
fn scaled(rows: &[SimRow], m: i128) -> Sums {
    let mut sums = [0; 3];
    for row in rows {
        for (sum, basis) in sums.iter_mut().zip([
            CostMetric::Unblended,
            CostMetric::Amortized,
            CostMetric::NetAmortized,
        ]) {
            *sum += i128::from(row.amount(basis)) * m / 5;
        }
    }
    sums
}

fn add(a: Sums, b: Sums) -> Sums {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

/// The requests whose answers must not change between publications: every operation that
/// reads cost rows, grouped and not, paged (page size 7) and not.
fn every_request() -> Vec<(&'static str, Value)> {
    let filtered = {
        let mut q = query(11, 24, "DAILY", &[("DIMENSION", "RESOURCE_ID")]);
        q["Filter"] = json!({"Dimensions": {"Key": "SERVICE", "Values": [
            "Amazon Elastic Compute Cloud - Compute"]}});
        q
    };
    let credits = {
        let mut q = query(1, 24, "DAILY", &[("DIMENSION", "SERVICE")]);
        q["Filter"] = json!({"Dimensions": {"Key": "RECORD_TYPE", "Values": ["Credit"]}});
        q
    };
    vec![
        ("GetCostAndUsage", query(1, 25, "DAILY", &[])),
        ("GetCostAndUsage", query(1, 25, "MONTHLY", &[])),
        (
            "GetCostAndUsage",
            query(
                1,
                25,
                "DAILY",
                &[
                    ("DIMENSION", "LINKED_ACCOUNT"),
                    ("DIMENSION", "RECORD_TYPE"),
                ],
            ),
        ),
        (
            "GetCostAndUsage",
            query(
                1,
                25,
                "MONTHLY",
                &[("DIMENSION", "RECORD_TYPE"), ("DIMENSION", "SERVICE")],
            ),
        ),
        (
            "GetCostAndUsage",
            query(
                20,
                25,
                "DAILY",
                &[("COST_CATEGORY", "Team"), ("TAG", "env")],
            ),
        ),
        ("GetCostAndUsage", credits),
        ("GetCostAndUsageWithResources", filtered),
        (
            "GetCostForecast",
            json!({"TimePeriod": {"Start": day(24).to_string(), "End": day(30).to_string()},
                   "Metric": "UNBLENDED_COST", "Granularity": "MONTHLY",
                   "PredictionIntervalLevel": 80}),
        ),
        (
            "GetCostCategories",
            json!({"TimePeriod": {"Start": day(1).to_string(), "End": day(25).to_string()},
                   "CostCategoryName": "Team"}),
        ),
    ]
}

async fn answers(state: &State) -> Vec<Vec<Bytes>> {
    let mut out = Vec::new();
    for (operation, request) in every_request() {
        out.push(bodies(state, operation, &request).await);
    }
    out
}

#[tokio::test]
async fn between_publications_every_answer_is_the_same_byte_for_byte() {
    let state = state(7, Some(Publications::default()), at(23, 10, 0, 0));
    let first = answers(&state).await;
    // Twice at once (from the cache), then computed afresh just before the next publication.
    assert_eq!(answers(&state).await, first);
    set_time(&state, at(23, 17, 59, 59));
    assert_eq!(answers(&state).await, first);
    // Paged: more than one page.
    assert!(first[2].len() > 10, "{} pages", first[2].len());
    // The next publication (the 23rd's late credit, on the 20th, an EC2 resource's) changes
    // every answer but the list of Team values: the forecast's week holds the 20th.
    set_time(&state, at(23, 18, 0, 0));
    let after = answers(&state).await;
    for (i, (before, after)) in first.iter().zip(&after).enumerate() {
        assert_eq!(
            before == after,
            i == 8,
            "request {i}: {:?}",
            every_request()[i]
        );
    }
    // Without publications, the clock changes nothing.
    let still = self::state(7, None, at(23, 10, 0, 0));
    let given = answers(&still).await;
    set_time(&still, at(25, 3, 0, 0));
    assert_eq!(answers(&still).await, given);
}

#[tokio::test]
async fn a_publication_adds_exactly_the_modelled_usage_to_the_open_days() {
    let base = base();
    let state = state(500, Some(Publications::default()), at(23, 9, 59, 59));
    let request = query(20, 25, "DAILY", &[]);
    let before = by_period(&pages(&bodies(&state, "GetCostAndUsage", &request).await));
    set_time(&state, at(23, 10, 0, 0));
    let after = by_period(&pages(&bodies(&state, "GetCostAndUsage", &request).await));
    let rows = |d: u32| base.day_rows(day(d), day(d + 1));
    // Today (the 23rd): one fifth, then two; yesterday: four fifths, then whole.
    assert_eq!(before["2026-11-23"], (true, scaled(rows(23), 1)));
    assert_eq!(after["2026-11-23"], (true, scaled(rows(23), 2)));
    assert_eq!(before["2026-11-22"], (true, scaled(rows(22), 4)));
    assert_eq!(after["2026-11-22"], (false, scaled(rows(22), 5)));
    let growth: Vec<i128> = (0..3)
        .map(|i| after["2026-11-23"].1[i] - before["2026-11-23"].1[i])
        .collect();
    let modelled: Vec<i128> = (0..3)
        .map(|i| scaled(rows(23), 2)[i] - scaled(rows(23), 1)[i])
        .collect();
    assert_eq!(growth, modelled);
    assert!(growth[0] > 100 * i128::from(UNITS_PER_USD), "{growth:?}");
    // The 24th: nothing yet, and Estimated.
    assert_eq!(after["2026-11-24"], (true, [0; 3]));
    // Earlier days unchanged by it; the 21st whole.
    assert_eq!(before["2026-11-21"], after["2026-11-21"]);
    assert_eq!(after["2026-11-21"], (false, scaled(rows(21), 5)));
}

#[tokio::test]
async fn the_estimated_flag_turns_false_at_the_finalising_publication() {
    let state = state(500, Some(Publications::default()), at(23, 1, 0, 0));
    let request = query(20, 24, "DAILY", &[("DIMENSION", "SERVICE")]);
    let flags = |pages: &[Value]| -> Vec<bool> {
        by_period(pages)
            .values()
            .map(|(estimated, _)| *estimated)
            .collect()
    };
    for (now, expected) in [
        (at(23, 1, 0, 0), [false, false, true, true]),
        (at(23, 2, 0, 0), [false, false, true, true]),
        (at(23, 9, 59, 59), [false, false, true, true]),
        (at(23, 10, 0, 0), [false, false, false, true]),
        (at(23, 23, 59, 59), [false, false, false, true]),
    ] {
        set_time(&state, now);
        let answer = pages(&bodies(&state, "GetCostAndUsage", &request).await);
        assert_eq!(flags(&answer), expected, "{now}");
    }
    // A month's period is Estimated while its last day is.
    let month = query(1, 23, "MONTHLY", &[]);
    set_time(&state, at(23, 9, 0, 0));
    let answer = by_period(&pages(&bodies(&state, "GetCostAndUsage", &month).await));
    assert!(answer["2026-11-01"].0);
    set_time(&state, at(23, 10, 0, 0));
    let answer = by_period(&pages(&bodies(&state, "GetCostAndUsage", &month).await));
    assert!(!answer["2026-11-01"].0);
}

#[tokio::test]
async fn the_late_credit_appears_at_its_publication_and_groups_still_sum_to_the_total() {
    let base = base();
    let state = state(11, Some(Publications::default()), at(23, 17, 59, 59));
    // -12.30 USD: 10 USD and 10 cents per day of the month of the 23rd.
    let credit = [-123 * i128::from(UNITS_PER_USD) / 10; 3];
    let credit_rows = json!({"Dimensions": {"Key": "RECORD_TYPE", "Values": ["Credit"]}});
    let groupings: [&[(&str, &str)]; 6] = [
        &[
            ("DIMENSION", "LINKED_ACCOUNT"),
            ("DIMENSION", "RECORD_TYPE"),
        ],
        &[("DIMENSION", "SERVICE")],
        &[("TAG", "team")],
        &[("COST_CATEGORY", "Team"), ("COST_CATEGORY", "Environment")],
        &[("DIMENSION", "RECORD_TYPE"), ("DIMENSION", "REGION")],
        &[("DIMENSION", "AZ")],
    ];
    let mut days = Vec::new();
    for now in [at(23, 17, 59, 59), at(23, 18, 0, 0), at(24, 2, 0, 0)] {
        set_time(&state, now);
        for granularity in ["DAILY", "MONTHLY"] {
            for filter in [None, Some(&credit_rows)] {
                let mut total = query(1, 25, granularity, &[]);
                if let Some(f) = filter {
                    total["Filter"] = f.clone();
                }
                let total = by_period(&pages(&bodies(&state, "GetCostAndUsage", &total).await));
                for group_by in groupings {
                    let mut grouped = query(1, 25, granularity, group_by);
                    if let Some(f) = filter {
                        grouped["Filter"] = f.clone();
                    }
                    let answer = pages(&bodies(&state, "GetCostAndUsage", &grouped).await);
                    assert_eq!(by_period(&answer), total, "{now} {grouped}");
                }
                if granularity == "DAILY" && filter.is_none() {
                    days.push(total);
                }
            }
        }
    }
    let rows = |d: u32| base.day_rows(day(d), day(d + 1));
    // The credit of the 23rd's third publication lands on the 20th, exactly.
    assert_eq!(days[0]["2026-11-20"].1, scaled(rows(20), 5));
    assert_eq!(days[1]["2026-11-20"].1, add(scaled(rows(20), 5), credit));
    // Its day stays final; today grows by another fifth; nothing else moves.
    assert!(!days[1]["2026-11-20"].0);
    assert_eq!(days[0]["2026-11-23"], (true, scaled(rows(23), 2)));
    assert_eq!(days[1]["2026-11-23"], (true, scaled(rows(23), 3)));
    for d in (1..=24).filter(|d| ![20, 23].contains(d)) {
        let key = day(d).to_string();
        assert_eq!(days[0][&key], days[1][&key], "{key}");
    }
    // The next day's first publication brings its own credit only at 18:00 (on the 21st).
    assert_eq!(days[2]["2026-11-20"], days[1]["2026-11-20"]);
    assert_eq!(days[2]["2026-11-21"], days[1]["2026-11-21"]);
    // The credit row is the payer's EC2 Credit, in every view of it.
    set_time(&state, at(23, 18, 0, 0));
    let mut payer_credit = query(20, 21, "DAILY", &[("DIMENSION", "SERVICE")]);
    payer_credit["Filter"] = json!({"And": [credit_rows.clone(),
        {"Dimensions": {"Key": "LINKED_ACCOUNT", "Values": [PAYER]}}]});
    let after = pages(&bodies(&state, "GetCostAndUsage", &payer_credit).await);
    set_time(&state, at(23, 17, 0, 0));
    let before = pages(&bodies(&state, "GetCostAndUsage", &payer_credit).await);
    let ec2 = |pages: &[Value]| -> i128 {
        pages[0]["ResultsByTime"][0]["Groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|g| g["Keys"][0] == "Amazon Elastic Compute Cloud - Compute")
            .map(|g| {
                g["Metrics"]["UnblendedCost"]["Amount"]
                    .as_str()
                    .map_or(0, units)
            })
            .sum()
    };
    assert_eq!(ec2(&after) - ec2(&before), credit[0]);
}

#[tokio::test]
async fn the_data_day_moves_at_midnight_and_fills_from_its_first_publication() {
    let base = base();
    let state = state(500, Some(Publications::default()), at(23, 23, 59, 59));
    let month = query(1, 26, "DAILY", &[("DIMENSION", "LINKED_ACCOUNT")]);
    let before = bodies(&state, "GetCostAndUsage", &month).await;
    let forecast = |start: u32| {
        json!({"TimePeriod": {"Start": day(start).to_string(), "End": day(30).to_string()},
               "Metric": "UNBLENDED_COST"})
    };
    let (status, _) = raw(&state, "GetCostForecast", &forecast(23)).await;
    assert_eq!(status, 200);
    // Midnight: a new day, without cost; the cost rows' answers are unchanged.
    set_time(&state, at(24, 0, 0, 0));
    assert_eq!(bodies(&state, "GetCostAndUsage", &month).await, before);
    let (status, refused) = raw(&state, "GetCostForecast", &forecast(23)).await;
    assert_eq!(status, 400, "{refused:?}");
    let (status, _) = raw(&state, "GetCostForecast", &forecast(24)).await;
    assert_eq!(status, 200);
    let days = by_period(&pages(&before));
    assert_eq!(days["2026-11-24"], (true, [0; 3]));
    assert_eq!(days["2026-11-25"], (true, [0; 3]));
    // The new day's first publication: the 24th at a fifth, the 23rd at four.
    set_time(&state, at(24, 2, 0, 0));
    let days = by_period(&pages(&bodies(&state, "GetCostAndUsage", &month).await));
    let rows = |d: u32| base.day_rows(day(d), day(d + 1));
    assert_eq!(days["2026-11-24"], (true, scaled(rows(24), 1)));
    assert_eq!(days["2026-11-23"], (true, scaled(rows(23), 4)));
    assert!(!days["2026-11-22"].0);
    // Past the dataset's last day: the 25th has no rows, ever.
    set_time(&state, at(25, 18, 0, 0));
    let days = by_period(&pages(&bodies(&state, "GetCostAndUsage", &month).await));
    assert_eq!(days["2026-11-25"], (true, [0; 3]));
    assert_eq!(days["2026-11-24"], (false, scaled(rows(24), 5)));
}

#[tokio::test]
async fn the_handle_serves_and_tells_the_published_dataset() {
    let publications = Publications::default();
    let sim = Simulator::builder()
        .account(PAYER, base())
        .publications(publications.clone())
        .clock(fixed_clock(at(23, 12, 0, 0)))
        .start()
        .await;
    let Ok(sim) = sim else {
        panic!("the simulator did not start");
    };
    assert_eq!(sim.publications(), Some(&publications));
    assert_eq!(sim.now(), at(23, 12, 0, 0));
    let edition = Edition {
        day: day(23),
        published: 2,
    };
    assert_eq!(sim.edition(), Some(edition));
    let base = sim.base_dataset(PAYER).unwrap_or_default();
    assert_eq!(base.today, Some(day(24)));
    let served = sim.dataset(PAYER).unwrap_or_default();
    assert_eq!(*served, publications.publish(&base, edition));
    assert_eq!(served.today, Some(day(23)));
    // The same Arc until the next publication.
    sim.set_time(at(23, 17, 59, 0));
    assert!(Arc::ptr_eq(
        &served,
        &sim.dataset(PAYER).unwrap_or_default()
    ));
    sim.set_time(at(23, 18, 0, 0));
    assert!(!Arc::ptr_eq(
        &served,
        &sim.dataset(PAYER).unwrap_or_default()
    ));
    assert_eq!(
        sim.edition(),
        Some(Edition {
            day: day(23),
            published: 3
        })
    );
    // Without publications: the dataset as given, whatever the time.
    let plain = Simulator::builder()
        .account(PAYER, self::base())
        .start()
        .await;
    let Ok(plain) = plain else {
        panic!("the simulator did not start");
    };
    assert_eq!(plain.edition(), None);
    plain.set_time(at(1, 0, 0, 0));
    let given = plain.dataset(PAYER).unwrap_or_default();
    assert!(Arc::ptr_eq(
        &given,
        &plain.base_dataset(PAYER).unwrap_or_default()
    ));
}
