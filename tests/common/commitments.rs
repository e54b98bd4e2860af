//! Expected commitment and anomaly figures, computed here from a dataset's cost rows with the
//! parameters `aws_cost_simulator::commitments` documents (exact sums in 1e-10 USD and 1e-10
//! hours). Shared by tests/commitments_sim.rs (the simulator's raw answers) and
//! tests/commitments.rs (the exporter's series).

use std::collections::{BTreeMap, BTreeSet};

use aws_cost_simulator::commitments::{
    ANOMALIES, AnomalySpec, HOURS_PER_DAY, HOURS_TODAY, SAVINGS_PLANS, SAVINGS_PLANS_ELIGIBLE,
    reservation_profile,
};
use aws_cost_simulator::dataset::{SimRow, format_units};
use aws_cost_simulator::{CostMetric, Dataset};
use chrono::{Days, NaiveDate};

pub const RDS: &str = "Amazon Relational Database Service";
pub const EC2: &str = "Amazon Elastic Compute Cloud - Compute";

pub fn unblended(row: &SimRow) -> i128 {
    i128::from(row.amount(CostMetric::Unblended))
}

pub fn rows_of(dataset: &Dataset, day: NaiveDate) -> impl Iterator<Item = &SimRow> {
    dataset.rows.iter().filter(move |r| r.day == day)
}

pub fn days(start: NaiveDate, end: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    start.iter_days().take_while(move |d| *d < end)
}

/// A percentage as the simulator writes it: `part × 100 / whole` in `f64`, "0" without a whole.
pub fn percent(part: i128, whole: i128) -> String {
    if whole == 0 {
        "0".to_string()
    } else {
        format!("{}", part as f64 * 100.0 / whole as f64)
    }
}

/// An exact amount (USD or hours) as Cost Explorer writes it, read back as the exporter reads
/// it: the `f64` nearest to the decimal.
pub fn decimal(units: i128) -> f64 {
    format_units(units).parse().unwrap()
}

/// `part / whole` of exact amounts, as a ratio.
pub fn ratio(part: i128, whole: i128) -> f64 {
    part as f64 / whole as f64
}

/// Midnight UTC of `day`, in seconds since the epoch, as a sample value.
pub fn midnight(day: NaiveDate) -> f64 {
    day.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp() as f64
}

/// Per plan: (recurring, upfront, total, used, on demand) over `[start, end)`, as documented.
pub fn expected_plans(dataset: &Dataset, start: NaiveDate, end: NaiveDate) -> Vec<[i128; 5]> {
    let mut out = vec![[0i128; 5]; SAVINGS_PLANS.len()];
    for day in days(start, end) {
        let fee: i128 = rows_of(dataset, day)
            .filter(|r| r.record_type() == "SavingsPlanRecurringFee")
            .map(unblended)
            .sum();
        let covered: Vec<&SimRow> = rows_of(dataset, day)
            .filter(|r| r.record_type() == "SavingsPlanCoveredUsage")
            .collect();
        let on_demand: i128 = covered.iter().map(|r| unblended(r)).sum();
        let amortized: i128 = covered
            .iter()
            .map(|r| i128::from(r.amount(CostMetric::Amortized)))
            .sum();
        let mut taken = [0i128; 3];
        for (k, plan) in SAVINGS_PLANS.iter().enumerate() {
            let last = k + 1 == SAVINGS_PLANS.len();
            let parts: Vec<i128> = [fee, amortized, on_demand]
                .iter()
                .zip(taken)
                .map(|(x, t)| {
                    if last {
                        x - t
                    } else {
                        x * plan.share_percent / 100
                    }
                })
                .collect();
            let (recurring, used, od) = (parts[0], parts[1], parts[2]);
            let total = (used * 100 / plan.utilization_percent).max(recurring);
            taken[0] += recurring;
            taken[1] += used;
            taken[2] += od;
            for (slot, v) in out[k]
                .iter_mut()
                .zip([recurring, total - recurring, total, used, od])
            {
                *slot += v;
            }
        }
    }
    out
}

pub fn sum_plans(plans: &[[i128; 5]]) -> [i128; 5] {
    let mut s = [0; 5];
    for p in plans {
        for (x, y) in s.iter_mut().zip(p) {
            *x += y;
        }
    }
    s
}

/// Savings Plans coverage over `[start, end)`: (covered, on demand) per `key` of the rows of
/// the eligible services (every such row makes its group, whatever its charge type).
pub fn expected_sp_coverage(
    dataset: &Dataset,
    (start, end): (NaiveDate, NaiveDate),
    key: impl Fn(&SimRow) -> &str,
) -> BTreeMap<String, (i128, i128)> {
    let mut out: BTreeMap<String, (i128, i128)> = BTreeMap::new();
    for row in dataset
        .rows
        .iter()
        .filter(|r| r.day >= start && r.day < end && SAVINGS_PLANS_ELIGIBLE.contains(&r.service()))
    {
        let slot = out.entry(key(row).to_string()).or_default();
        match row.record_type() {
            "SavingsPlanCoveredUsage" => slot.0 += unblended(row),
            "Usage" => slot.1 += unblended(row),
            _ => {}
        }
    }
    out
}

/// Per reservation (account, resource) of `service`: [purchased, actual, fee, on demand,
/// unused cost, potential], as documented.
pub fn expected_reservations(
    dataset: &Dataset,
    service: &str,
    start: NaiveDate,
    end: NaiveDate,
) -> BTreeMap<(String, String), [i128; 6]> {
    let mut out: BTreeMap<(String, String), [i128; 6]> = BTreeMap::new();
    for day in days(start, end) {
        let fees: Vec<&SimRow> = rows_of(dataset, day)
            .filter(|r| r.service() == service && r.record_type() == "RIFee")
            .collect();
        for fee_row in fees {
            let resource = fee_row.resource_id().unwrap();
            let on_demand: i128 = rows_of(dataset, day)
                .filter(|r| {
                    r.record_type() == "DiscountedUsage"
                        && r.account_id() == fee_row.account_id()
                        && r.resource_id() == Some(resource)
                })
                .map(unblended)
                .sum();
            let fee = unblended(fee_row);
            let (u, _, _) = reservation_profile(resource);
            let purchased = if day == dataset.today.unwrap() {
                HOURS_TODAY
            } else {
                HOURS_PER_DAY
            };
            let slot = out
                .entry((fee_row.account_id().to_string(), resource.to_string()))
                .or_default();
            for (s, v) in slot.iter_mut().zip([
                purchased,
                purchased * u / 100,
                fee,
                on_demand,
                fee * (100 - u) / 100,
                on_demand * 100 / u - fee,
            ]) {
                *s += v;
            }
        }
    }
    out
}

pub fn add6(a: &mut [i128; 6], b: &[i128; 6]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// The sum of every reservation's figures.
pub fn sum_reservations(reservations: &BTreeMap<(String, String), [i128; 6]>) -> [i128; 6] {
    let mut all = [0; 6];
    for f in reservations.values() {
        add6(&mut all, f);
    }
    all
}

/// Reservation coverage of `service` over `[start, end)`: (reserved hours, on-demand hours
/// and cost) per account with reservations or `Usage` rows of the service.
pub fn expected_ri_coverage(
    dataset: &Dataset,
    service: &str,
    start: NaiveDate,
    end: NaiveDate,
) -> BTreeMap<String, (i128, i128)> {
    let mut out: BTreeMap<String, (i128, i128)> = BTreeMap::new();
    for ((account, _), f) in expected_reservations(dataset, service, start, end) {
        out.entry(account).or_default().0 += f[1];
    }
    for row in dataset.rows.iter().filter(|r| {
        r.day >= start && r.day < end && r.service() == service && r.record_type() == "Usage"
    }) {
        out.entry(row.account_id().to_string()).or_default().1 += unblended(row);
    }
    out
}

/// The accounts with cost, sorted.
pub fn accounts_with_cost(dataset: &Dataset) -> Vec<String> {
    dataset
        .rows
        .iter()
        .map(|r| r.account_id().to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// One anomaly of [`ANOMALIES`] as the simulator derives it.
#[derive(Debug, Clone)]
pub struct ExpectedAnomaly {
    pub spec: &'static AnomalySpec,
    /// Its root causes' account.
    pub account: String,
    pub first: NaiveDate,
    /// Its end date, or the dataset's today while open.
    pub last: NaiveDate,
    pub actual: i128,
    pub expected: i128,
    /// The largest daily impact.
    pub max_impact: i128,
}

impl ExpectedAnomaly {
    pub fn impact(&self) -> i128 {
        self.actual - self.expected
    }
}

/// Every anomaly of [`ANOMALIES`]: actual spend is the service's `Usage` in its account over
/// its days, expected spend `expected_percent` of each day's.
pub fn expected_anomalies(dataset: &Dataset) -> Vec<ExpectedAnomaly> {
    let today = dataset.today.unwrap();
    let accounts = accounts_with_cost(dataset);
    ANOMALIES
        .iter()
        .map(|spec| {
            let account = accounts[spec.account_index].clone();
            let first = today - Days::new(spec.start_days_ago);
            let last = spec.end_days_ago.map_or(today, |d| today - Days::new(d));
            let (mut actual, mut expected, mut max_impact) = (0i128, 0i128, 0i128);
            for day in days(first, last + Days::new(1)) {
                let spent: i128 = rows_of(dataset, day)
                    .filter(|r| {
                        r.service() == spec.service
                            && r.account_id() == account
                            && r.record_type() == "Usage"
                    })
                    .map(unblended)
                    .sum();
                let normal = spent * spec.expected_percent / 100;
                actual += spent;
                expected += normal;
                max_impact = max_impact.max(spent - normal);
            }
            ExpectedAnomaly {
                spec,
                account,
                first,
                last,
                actual,
                expected,
                max_impact,
            }
        })
        .collect()
}
