//! Deterministic cost data for the simulated Cost Explorer.
//!
//! Amounts are integers in units of 1e-10 USD (Cost Explorer's precision), so the simulation
//! sums exactly and tests can compare the exporter's floating-point sums with exact totals.
//!
//! Rows share their strings: the generator interns every account id, service, record type,
//! resource id and tag set once, and each row holds reference-counted handles to them, so a
//! large organization's millions of rows cost little more than their amounts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{Days, NaiveDate};

/// Units of 1e-10 USD per dollar.
pub const UNITS_PER_USD: i64 = 10_000_000_000;

/// Cost-allocation tags (key, value), shared by every row with the same tag set.
pub type TagSet = Arc<[(Arc<str>, Arc<str>)]>;

/// One simulated cost line: a day, an account, a service and a record type, per cost basis.
///
/// Rows are made only by [`Dataset::generate`], which interns their strings: within a dataset,
/// equal strings are the same allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimRow {
    pub day: NaiveDate,
    account_id: Arc<str>,
    service: Arc<str>,
    record_type: Arc<str>,
    /// Amounts in 1e-10 USD, indexed like [`CostMetric::ALL`].
    pub amounts: [i64; 5],
    /// The resource, for services with resource-level data.
    resource_id: Option<Arc<str>>,
    /// Cost-allocation tags (key, value).
    tags: TagSet,
}

impl SimRow {
    /// The (linked) account the cost belongs to.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// The AWS service, as Cost Explorer's SERVICE dimension names it.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The record type (charge type): Usage, Credit, Tax, ...
    pub fn record_type(&self) -> &str {
        &self.record_type
    }

    /// The resource, for services with resource-level data.
    pub fn resource_id(&self) -> Option<&str> {
        self.resource_id.as_deref()
    }

    /// The value of a tag key, if the row carries it.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tag_interned(key).map(|v| &**v)
    }

    /// The row's tags, (key, value).
    pub fn tags(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tags.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The amount of one cost basis, in 1e-10 USD.
    pub fn amount(&self, basis: CostMetric) -> i64 {
        self.amounts[basis_index(basis)]
    }

    pub(crate) fn account_id_interned(&self) -> &Arc<str> {
        &self.account_id
    }

    pub(crate) fn service_interned(&self) -> &Arc<str> {
        &self.service
    }

    pub(crate) fn record_type_interned(&self) -> &Arc<str> {
        &self.record_type
    }

    pub(crate) fn resource_id_interned(&self) -> Option<&Arc<str>> {
        self.resource_id.as_ref()
    }

    pub(crate) fn tag_interned(&self, key: &str) -> Option<&Arc<str>> {
        self.tags.iter().find(|(k, _)| &**k == key).map(|(_, v)| v)
    }
}

/// Cost Explorer's cost metrics: every row carries an amount of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CostMetric {
    Unblended,
    Amortized,
    Blended,
    NetUnblended,
    NetAmortized,
}

impl CostMetric {
    /// Every metric, in the order of [`SimRow::amounts`].
    pub const ALL: [CostMetric; 5] = [
        CostMetric::Unblended,
        CostMetric::Amortized,
        CostMetric::Blended,
        CostMetric::NetUnblended,
        CostMetric::NetAmortized,
    ];

    /// The metric's name in GetCostAndUsage requests and answers.
    pub fn name(self) -> &'static str {
        match self {
            CostMetric::Unblended => "UnblendedCost",
            CostMetric::Amortized => "AmortizedCost",
            CostMetric::Blended => "BlendedCost",
            CostMetric::NetUnblended => "NetUnblendedCost",
            CostMetric::NetAmortized => "NetAmortizedCost",
        }
    }

    /// The metric's name in GetCostForecast requests.
    pub fn forecast_name(self) -> &'static str {
        match self {
            CostMetric::Unblended => "UNBLENDED_COST",
            CostMetric::Amortized => "AMORTIZED_COST",
            CostMetric::Blended => "BLENDED_COST",
            CostMetric::NetUnblended => "NET_UNBLENDED_COST",
            CostMetric::NetAmortized => "NET_AMORTIZED_COST",
        }
    }

    /// The metric a GetCostAndUsage name ([`CostMetric::name`]) names.
    pub fn from_name(name: &str) -> Option<CostMetric> {
        CostMetric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The metric a GetCostForecast name ([`CostMetric::forecast_name`]) names.
    pub fn from_forecast_name(name: &str) -> Option<CostMetric> {
        CostMetric::ALL
            .into_iter()
            .find(|m| m.forecast_name() == name)
    }
}

/// The index of a cost basis in [`SimRow::amounts`] (its place in [`CostMetric::ALL`]).
pub(crate) fn basis_index(basis: CostMetric) -> usize {
    CostMetric::ALL
        .iter()
        .position(|b| *b == basis)
        .unwrap_or(0)
}

/// The cost data one payer (or standalone) account sees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dataset {
    /// Account id to account name: the organization, members without cost included.
    pub accounts: BTreeMap<String, String>,
    /// The cost rows, sorted by day ([`Dataset::day_rows`] relies on it).
    pub rows: Vec<SimRow>,
    /// Days from this one on are Estimated.
    pub estimated_from: Option<NaiveDate>,
    /// The last day with data.
    pub today: Option<NaiveDate>,
}

/// Services with resource-level rows: (service, resources per account, id pattern).
pub const RESOURCE_SERVICES: &[(&str, usize)] = &[
    ("Amazon Elastic Compute Cloud - Compute", 14),
    ("Amazon Relational Database Service", 4),
];

/// The tag keys rows carry, and their values; some cost is untagged.
pub const TAGS: &[(&str, &[&str])] = &[
    ("team", &["platform", "data", "web \"frontend\""]),
    ("env", &["prod", "staging"]),
];

/// More values of each tag key of [`TAGS`], used by larger organizations: one more team per
/// 50 accounts and one more environment per 300 (a 4-account organization uses none).
const MORE_TAG_VALUES: &[(&[&str], usize)] = &[
    (
        &[
            "payments",
            "search",
            "identity",
            "checkout",
            "catalog",
            "analytics",
            "ml",
            "security",
            "mobile",
            "growth",
            "billing",
            "messaging",
            "observability",
            "infra",
            "core",
            "ads",
            "media",
            "risk",
            "support",
            "finance",
            "marketing",
            "devex",
            "edge",
            "storage",
        ],
        50,
    ),
    (&["dev", "qa", "sandbox", "perf"], 300),
];

/// The values each tag key of [`TAGS`] takes in an organization of `accounts` accounts.
fn tag_values(accounts: usize) -> Vec<Vec<&'static str>> {
    TAGS.iter()
        .zip(MORE_TAG_VALUES)
        .map(|((_, base), (more, per))| {
            let extra = (accounts / per).min(more.len());
            base.iter().chain(&more[..extra]).copied().collect()
        })
        .collect()
}

fn resource_id(service: &str, account_id: &str, index: usize) -> String {
    if service.contains("Relational Database") {
        format!("arn:aws:rds:us-east-1:{account_id}:db:db-{index}")
    } else {
        format!(
            "i-{:017x}",
            (account_id.parse::<u64>().unwrap_or(0) % 0xfff_ffff) * 1000 + index as u64
        )
    }
}

/// Deterministic tags for a (account, service, resource), as (key, value) indices into
/// [`TAGS`] and `values`: about a fifth of cost is untagged.
fn tags_for(
    account_index: usize,
    service: &str,
    resource: usize,
    values: &[Vec<&str>],
) -> Vec<(usize, usize)> {
    let seed = account_index * 31 + service.len() * 7 + resource * 13;
    values
        .iter()
        .enumerate()
        .filter_map(|(k, values)| {
            let pick = (seed + k * 5) % (values.len() + 1);
            (pick < values.len()).then_some((k, pick))
        })
        .collect()
}

/// (service, record types it bills under, typical daily usage in USD)
const SERVICES: &[(&str, &[&str], f64)] = &[
    (
        "Amazon Elastic Compute Cloud - Compute",
        &[
            "Usage",
            "SavingsPlanCoveredUsage",
            "SavingsPlanNegation",
            "Credit",
        ],
        410.0,
    ),
    ("EC2 - Other", &["Usage"], 58.0),
    ("Amazon Simple Storage Service", &["Usage", "Refund"], 73.5),
    (
        "Amazon Relational Database Service",
        &["Usage", "DiscountedUsage", "RIFee"],
        188.0,
    ),
    ("Amazon CloudFront", &["Usage", "Credit"], 21.0),
    ("AWS Lambda", &["Usage"], 6.4),
    ("Amazon DynamoDB", &["Usage"], 31.0),
    (
        "Amazon Elastic Container Service for Kubernetes",
        &["Usage"],
        14.4,
    ),
    ("AmazonCloudWatch", &["Usage"], 17.2),
    ("AWS Key Management Service", &["Usage"], 2.1),
    ("Amazon Virtual Private Cloud", &["Usage"], 9.6),
    (
        "Savings Plans for AWS Compute usage",
        &["SavingsPlanRecurringFee"],
        240.0,
    ),
    ("AWS Support (Business)", &["Support"], 35.0),
    ("Tax", &["Tax"], 0.0),
];

/// The parameters of a generated dataset.
#[derive(Debug, Clone)]
pub struct DatasetSpec<'a> {
    pub seed: u64,
    /// (account id, account name); the first is the payer.
    pub accounts: &'a [(&'a str, &'a str)],
    /// The last day with data (today, partially billed).
    pub today: NaiveDate,
    /// How many days before `today` have data.
    pub history_days: u64,
    /// How many of the most recent days are Estimated.
    pub estimated_days: u64,
    /// Scales every amount (a small account vs a large organization).
    pub scale: f64,
    /// Members of the organization that have no cost yet.
    pub idle_accounts: &'a [(&'a str, &'a str)],
}

/// One `Arc` per distinct string.
#[derive(Default)]
struct Interner {
    strings: HashSet<Arc<str>>,
    tag_sets: HashMap<Vec<(usize, usize)>, TagSet>,
}

impl Interner {
    fn string(&mut self, s: &str) -> Arc<str> {
        if let Some(interned) = self.strings.get(s) {
            return interned.clone();
        }
        let interned: Arc<str> = Arc::from(s);
        self.strings.insert(interned.clone());
        interned
    }

    /// The tag set of (key, value) indices into [`TAGS`] and `values`.
    fn tag_set(&mut self, picks: Vec<(usize, usize)>, values: &[Vec<&str>]) -> TagSet {
        if let Some(set) = self.tag_sets.get(&picks) {
            return set.clone();
        }
        let set: TagSet = picks
            .iter()
            .map(|&(k, v)| (self.string(TAGS[k].0), self.string(values[k][v])))
            .collect();
        self.tag_sets.insert(picks, set.clone());
        set
    }
}

/// What every row of one account and service shares, per resource (one "resource" for
/// services billed in one line).
struct ServicePlan {
    resource_ids: Vec<Option<Arc<str>>>,
    tags: Vec<TagSet>,
}

/// The interned strings of one account's rows.
struct AccountPlan {
    id: Arc<str>,
    /// Indexed like [`SERVICES`].
    services: Vec<ServicePlan>,
}

impl Dataset {
    /// Generates realistic rows: a dozen services, usage, savings plans, reservations, support,
    /// tax, negative credits and refunds, weekly rhythm, a partial "today".
    pub fn generate(spec: &DatasetSpec<'_>) -> Self {
        let mut rng = fastrand::Rng::with_seed(spec.seed);
        let mut interner = Interner::default();
        let values = tag_values(spec.accounts.len());
        let untagged: TagSet = Arc::from([]);
        let services: Vec<Arc<str>> = SERVICES
            .iter()
            .map(|(service, ..)| interner.string(service))
            .collect();
        let record_types: Vec<Vec<Arc<str>>> = SERVICES
            .iter()
            .map(|(_, record_types, _)| record_types.iter().map(|r| interner.string(r)).collect())
            .collect();
        let cost_explorer = interner.string("AWS Cost Explorer");
        let usage = interner.string("Usage");
        let plans: Vec<AccountPlan> = spec
            .accounts
            .iter()
            .enumerate()
            .map(|(a, (account_id, _))| AccountPlan {
                id: interner.string(account_id),
                services: SERVICES
                    .iter()
                    .map(|(service, ..)| {
                        let resources = resource_count(service);
                        let resource_ids = (0..resources.max(1))
                            .map(|resource| {
                                (resources > 0).then(|| {
                                    interner.string(&resource_id(service, account_id, resource))
                                })
                            })
                            .collect();
                        let tags = (0..resources.max(1))
                            .map(|resource| {
                                if *service == "Tax" {
                                    untagged.clone()
                                } else {
                                    interner
                                        .tag_set(tags_for(a, service, resource, &values), &values)
                                }
                            })
                            .collect();
                        ServicePlan { resource_ids, tags }
                    })
                    .collect(),
            })
            .collect();

        let mut rows = Vec::new();
        let first = spec.today - Days::new(spec.history_days);
        let mut day = first;
        while day <= spec.today {
            // Today is still being billed: a fraction of a day.
            let day_fraction = if day == spec.today { 0.35 } else { 1.0 };
            let weekday = chrono::Datelike::weekday(&day).num_days_from_monday();
            let weekly = if weekday >= 5 { 0.82 } else { 1.0 };
            for (a, plan) in plans.iter().enumerate() {
                let account_scale = spec.scale / (1.0 + a as f64 * 0.7);
                let mut taxable = 0.0;
                for (s, (service, service_record_types, usd)) in SERVICES.iter().enumerate() {
                    // Not every account uses every service.
                    if *service != "Tax"
                        && !service.starts_with("Amazon Elastic Compute Cloud")
                        && (a + service.len()) % 5 == 4
                    {
                        continue;
                    }
                    let resources = resource_count(service);
                    let service_plan = &plan.services[s];
                    for (t, record_type) in service_record_types.iter().enumerate() {
                        // Resource services bill per resource; others in one line.
                        for resource in 0..resources.max(1) {
                            let share =
                                1.0 / resources.max(1) as f64 * (0.5 + (resource % 3) as f64 * 0.5);
                            let usage = usd
                                * account_scale
                                * weekly
                                * day_fraction
                                * share
                                * (0.85 + 0.3 * rng.f64());
                            let unblended = match *record_type {
                                "Usage" | "DiscountedUsage" | "SavingsPlanCoveredUsage" => usage,
                                "SavingsPlanNegation" => -usage * 0.55,
                                "RIFee" => 42.0 * account_scale * day_fraction * share,
                                "SavingsPlanRecurringFee" if a == 0 => usage,
                                "SavingsPlanRecurringFee" => continue,
                                "Support" if a == 0 => usage,
                                "Support" => continue,
                                // Credits on most days, refunds now and then.
                                "Credit" if rng.u8(..10) < 7 => -usage * 0.2,
                                "Refund" if rng.u8(..10) == 0 => -usage * 0.5,
                                "Tax" => taxable * 0.08,
                                _ => continue,
                            };
                            if *record_type != "Tax" {
                                taxable += unblended.max(0.0);
                            }
                            let amounts = basis_amounts(record_type, unblended, &mut rng);
                            rows.push(SimRow {
                                day,
                                account_id: plan.id.clone(),
                                service: services[s].clone(),
                                record_type: record_types[s][t].clone(),
                                amounts,
                                resource_id: service_plan.resource_ids[resource].clone(),
                                tags: service_plan.tags[resource].clone(),
                            });
                        }
                    }
                }
                // A sliver of cost small enough that Cost Explorer writes it in E notation.
                rows.push(SimRow {
                    day,
                    account_id: plan.id.clone(),
                    service: cost_explorer.clone(),
                    record_type: usage.clone(),
                    amounts: [rng.i64(1..9999); 5],
                    resource_id: None,
                    tags: untagged.clone(),
                });
            }
            day = day + Days::new(1);
        }
        Dataset {
            accounts: spec
                .accounts
                .iter()
                .chain(spec.idle_accounts)
                .map(|(id, name)| (id.to_string(), name.to_string()))
                .collect(),
            rows,
            estimated_from: spec
                .estimated_days
                .checked_sub(1)
                .map(|back| spec.today - Days::new(back)),
            today: Some(spec.today),
        }
    }

    /// The rows of the days in `[from, to)`: a slice of [`Dataset::rows`], found by binary
    /// search on the day since rows are sorted by day. This is the day index queries use to
    /// touch only the rows of their days.
    pub fn day_rows(&self, from: NaiveDate, to: NaiveDate) -> &[SimRow] {
        let start = self.rows.partition_point(|r| r.day < from);
        let end = self.rows.partition_point(|r| r.day < to).max(start);
        &self.rows[start..end]
    }

    /// Whether Cost Explorer marks a day Estimated.
    pub fn is_estimated(&self, day: NaiveDate) -> bool {
        self.estimated_from.is_some_and(|from| day >= from)
    }

    /// The exact sum, in USD, of one cost basis over the rows `filter` keeps.
    pub fn total(&self, basis: CostMetric, filter: impl Fn(&SimRow) -> bool) -> f64 {
        units_to_f64(self.total_units(basis, filter))
    }

    /// The exact sum, in 1e-10 USD, of one cost basis over the rows `filter` keeps.
    pub fn total_units(&self, basis: CostMetric, filter: impl Fn(&SimRow) -> bool) -> i128 {
        sum_units(&self.rows, basis, filter)
    }

    /// The simulated forecast for `[start, end)` of the rows `filter` keeps: the average of
    /// the 7 complete days before today, times the days in the period, with an interval of
    /// -10% / +10%. Units of 1e-10 USD: (mean, lower, upper).
    pub fn forecast_units(
        &self,
        basis: CostMetric,
        start: NaiveDate,
        end: NaiveDate,
        filter: impl Fn(&SimRow) -> bool,
    ) -> (i128, i128, i128) {
        let Some(today) = self.today else {
            return (0, 0, 0);
        };
        let from = today - Days::new(7);
        let week = sum_units(self.day_rows(from, today), basis, filter);
        let days = i128::from((end - start).num_days().max(0));
        let mean = week * days / 7;
        (mean, mean * 9 / 10, mean * 11 / 10)
    }
}

fn sum_units(rows: &[SimRow], basis: CostMetric, filter: impl Fn(&SimRow) -> bool) -> i128 {
    let index = basis_index(basis);
    rows.iter()
        .filter(|r| filter(r))
        .map(|r| i128::from(r.amounts[index]))
        .sum()
}

/// How many resources each account runs of a service with resource-level rows (0: none).
fn resource_count(service: &str) -> usize {
    RESOURCE_SERVICES
        .iter()
        .find(|(name, _)| *name == service)
        .map_or(0, |(_, count)| *count)
}

/// The amounts for each basis, rounded to Cost Explorer's 1e-10 precision.
fn basis_amounts(record_type: &str, unblended: f64, rng: &mut fastrand::Rng) -> [i64; 5] {
    let (amortized, blended, discount) = match record_type {
        // Covered usage costs its Savings Plan rate once amortized.
        "SavingsPlanCoveredUsage" => (unblended * 0.72, unblended, 0.0),
        // Negation and recurring fees are folded into covered usage when amortized.
        "SavingsPlanNegation" | "SavingsPlanRecurringFee" => (0.0, unblended, 0.0),
        "DiscountedUsage" => (unblended * 0.64, unblended, 0.0),
        "RIFee" => (unblended * 0.36, unblended, 0.0),
        "Usage" => (
            unblended,
            unblended * (0.97 + 0.02 * rng.f64()),
            unblended * 0.03,
        ),
        _ => (unblended, unblended, 0.0),
    };
    let to_units = |usd: f64| (usd * UNITS_PER_USD as f64).round() as i64;
    [
        to_units(unblended),
        to_units(amortized),
        to_units(blended),
        to_units(unblended - discount),
        to_units(amortized - discount),
    ]
}

/// Converts exact units to the nearest `f64` dollars.
pub fn units_to_f64(units: i128) -> f64 {
    // Split to keep the division exact for sums beyond 2^53 units.
    let whole = units / i128::from(UNITS_PER_USD);
    let frac = units % i128::from(UNITS_PER_USD);
    whole as f64 + frac as f64 / UNITS_PER_USD as f64
}

/// Formats units as Cost Explorer writes amounts: plain decimals, and E notation for slivers.
pub fn format_units(units: i128) -> String {
    if units == 0 {
        return "0".to_string();
    }
    let sign = if units < 0 { "-" } else { "" };
    let abs = units.unsigned_abs();
    if abs < 100_000 {
        // Below 1e-5 USD: d.dddE-n, as Cost Explorer does.
        let digits = abs.to_string();
        let exponent = digits.len() as i32 - 1 - 10;
        let mantissa = digits.trim_end_matches('0');
        let (head, tail) = mantissa.split_at(1);
        return if tail.is_empty() {
            format!("{sign}{head}E{exponent}")
        } else {
            format!("{sign}{head}.{tail}E{exponent}")
        };
    }
    let whole = abs / UNITS_PER_USD as u128;
    let frac = abs % UNITS_PER_USD as u128;
    if frac == 0 {
        return format!("{sign}{whole}");
    }
    let frac = format!("{frac:010}");
    format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_format_like_cost_explorer() {
        assert_eq!(format_units(0), "0");
        assert_eq!(format_units(123_456_789_012), "12.3456789012");
        assert_eq!(format_units(-2_500_000_000), "-0.25");
        assert_eq!(format_units(10_000_000_000), "1");
        assert_eq!(format_units(1234), "1.234E-7");
        assert_eq!(format_units(-261), "-2.61E-8");
        assert_eq!(format_units(5), "5E-10");
        for units in [
            1234i128,
            -261,
            5,
            123_456_789_012,
            -2_500_000_000,
            99_999,
            100_000,
        ] {
            let parsed: f64 = format_units(units).parse().unwrap();
            assert!(
                (parsed - units_to_f64(units)).abs() <= 1e-18_f64.max(parsed.abs() * 1e-15),
                "{units}"
            );
        }
    }

    #[test]
    fn generation_is_deterministic_and_varied() {
        let spec = DatasetSpec {
            seed: 7,
            accounts: &[("111111111111", "Payer"), ("222222222222", "Member")],
            today: NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
            history_days: 40,
            estimated_days: 2,
            scale: 1.0,
            idle_accounts: &[("333333333333", "Idle")],
        };
        let a = Dataset::generate(&spec);
        assert_eq!(a, Dataset::generate(&spec));
        let record_types: std::collections::BTreeSet<&str> =
            a.rows.iter().map(|r| r.record_type()).collect();
        for expected in [
            "Usage",
            "Tax",
            "Credit",
            "Refund",
            "SavingsPlanCoveredUsage",
            "SavingsPlanNegation",
            "RIFee",
            "Support",
        ] {
            assert!(record_types.contains(expected), "{expected} missing");
        }
        assert!(a.rows.iter().any(|r| r.amount(CostMetric::Unblended) < 0));
        assert_eq!(a.accounts.len(), 3);
        assert!(!a.rows.iter().any(|r| r.account_id() == "333333333333"));
        let resources: std::collections::BTreeSet<&str> =
            a.rows.iter().filter_map(|r| r.resource_id()).collect();
        // 14 instances in each account; 4 databases in the one account that uses RDS.
        assert_eq!(resources.len(), 2 * 14 + 4);
        assert!(
            a.rows
                .iter()
                .any(|r| r.tag("team") == Some("web \"frontend\""))
        );
        assert!(
            a.rows
                .iter()
                .any(|r| r.tag("team").is_none() && r.service() != "Tax")
        );
        assert!(a.is_estimated(NaiveDate::from_ymd_opt(2026, 11, 22).unwrap()));
        assert!(!a.is_estimated(NaiveDate::from_ymd_opt(2026, 11, 21).unwrap()));
    }

    fn small_spec(today: NaiveDate) -> DatasetSpec<'static> {
        DatasetSpec {
            seed: 3,
            accounts: &[
                ("111111111111", "Payer"),
                ("222222222222", "Member"),
                ("444444444444", "Other"),
            ],
            today,
            history_days: 10,
            estimated_days: 2,
            scale: 1.0,
            idle_accounts: &[],
        }
    }

    #[test]
    fn rows_share_interned_strings() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let a = Dataset::generate(&small_spec(today));
        let same = |x: &Arc<str>, y: &Arc<str>| **x != **y || Arc::ptr_eq(x, y);
        for pair in a.rows.windows(2).step_by(7) {
            let (x, y) = (&pair[0], &pair[1]);
            assert!(same(x.account_id_interned(), y.account_id_interned()));
            assert!(same(x.service_interned(), y.service_interned()));
            assert!(same(x.record_type_interned(), y.record_type_interned()));
        }
        // Every row of one account holds the same allocation of its id; tag sets are shared.
        let payer: Vec<&SimRow> = a
            .rows
            .iter()
            .filter(|r| r.account_id() == "111111111111")
            .collect();
        assert!(
            payer
                .windows(2)
                .all(|p| Arc::ptr_eq(p[0].account_id_interned(), p[1].account_id_interned()))
        );
        let tag_sets: HashSet<*const (Arc<str>, Arc<str>)> =
            a.rows.iter().map(|r| r.tags.as_ptr()).collect();
        assert!(tag_sets.len() < 40, "{} tag sets", tag_sets.len());
        let resources: HashSet<*const u8> = a
            .rows
            .iter()
            .filter_map(|r| r.resource_id_interned().map(|id| id.as_ptr()))
            .collect();
        let distinct: std::collections::BTreeSet<&str> =
            a.rows.iter().filter_map(|r| r.resource_id()).collect();
        assert_eq!(resources.len(), distinct.len());
        let row = a.rows.iter().find(|r| r.tag("team").is_some()).unwrap();
        assert_eq!(row.tags().next().map(|(k, _)| k), Some("team"));
    }

    #[test]
    fn day_rows_are_the_rows_of_those_days() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let a = Dataset::generate(&small_spec(today));
        assert!(a.rows.is_sorted_by_key(|r| r.day));
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        for (from, to) in [
            (day(13), day(24)),
            (day(15), day(16)),
            (day(20), day(18)),
            (day(1), day(13)),
            (day(23), day(30)),
        ] {
            let expected: Vec<&SimRow> = a
                .rows
                .iter()
                .filter(|r| r.day >= from && r.day < to)
                .collect();
            let got: Vec<&SimRow> = a.day_rows(from, to).iter().collect();
            assert_eq!(got, expected, "{from} {to}");
        }
        assert!(a.day_rows(day(1), day(13)).is_empty());
        assert_eq!(a.day_rows(day(13), day(24)).len(), a.rows.len());
        assert!(Dataset::default().day_rows(day(1), day(30)).is_empty());
    }

    #[test]
    fn tag_values_grow_with_the_organization() {
        assert_eq!(
            tag_values(4),
            vec![
                vec!["platform", "data", "web \"frontend\""],
                vec!["prod", "staging"]
            ]
        );
        assert_eq!(tag_values(455)[0].len(), 3 + 9);
        assert_eq!(tag_values(455)[1].len(), 2 + 1);
        assert_eq!(tag_values(1500)[0].len(), 3 + 24);
        assert_eq!(tag_values(1500)[1].len(), 2 + 4);
    }
}
