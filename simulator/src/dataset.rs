//! Deterministic cost data for the simulated Cost Explorer.
//!
//! Amounts are integers in units of 1e-10 USD (Cost Explorer's precision), so the simulation
//! sums exactly and tests can compare the exporter's floating-point sums with exact totals.
//!
//! Rows share their strings: the generator interns every account id, service, record type,
//! resource id and tag set once, and each row holds reference-counted handles to them, so a
//! large organization's millions of rows cost little more than their amounts.
//!
//! # Dimensions and cost categories
//!
//! Besides its account, service, record type, resource and tags, every row has a value of each
//! dimension of [`EXTRA_DIMENSIONS`] (`AZ`, `INSTANCE_TYPE`, `OPERATION`, `PURCHASE_TYPE`,
//! `REGION`, `USAGE_TYPE`, `PLATFORM`, `TENANCY`, `DATABASE_ENGINE`), *derived* from those
//! fields (see [`extra_dimensions`] for the rules), so the generated rows, their amounts and
//! their number are what they were before these dimensions existed. Rows without a value of a
//! dimension carry Cost Explorer's placeholder for it (`NoAZ`, `NoInstanceType`, ...).
//!
//! A dataset may carry cost category definitions ([`CostCategory`]); each row is in a category
//! with one value, or uncategorised. The values are derived from the row's account and tags
//! when the dataset is generated ([`Dataset::generate_with_cost_categories`]) or later
//! ([`Dataset::with_cost_categories`]).

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
#[derive(Clone)]
pub struct SimRow {
    pub day: NaiveDate,
    account_id: Arc<str>,
    service: Arc<str>,
    record_type: Arc<str>,
    /// Amounts in 1e-10 USD, indexed like [`CostMetric::ALL`].
    pub amounts: [i64; 5],
    /// Cost-allocation tags (key, value).
    tags: TagSet,
    /// The index in `table` of what the row shares with every row of the same account,
    /// service, record type and resource: its resource, other dimensions and cost categories.
    meta: u32,
    /// One table for all the rows of a dataset: each row touches one reference count and its
    /// entry, instead of an allocation of its own.
    table: Arc<MetaTable>,
}

/// The [`RowMeta`]s of a dataset's rows.
#[derive(Debug, Default, PartialEq, Eq)]
struct MetaTable {
    metas: Vec<RowMeta>,
}

impl PartialEq for SimRow {
    fn eq(&self, other: &Self) -> bool {
        self.day == other.day
            && self.account_id == other.account_id
            && self.service == other.service
            && self.record_type == other.record_type
            && self.amounts == other.amounts
            && self.tags == other.tags
            && self.meta() == other.meta()
    }
}

impl Eq for SimRow {}

impl std::fmt::Debug for SimRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRow")
            .field("day", &self.day)
            .field("account_id", &self.account_id)
            .field("service", &self.service)
            .field("record_type", &self.record_type)
            .field("amounts", &self.amounts)
            .field("tags", &self.tags)
            .field("meta", self.meta())
            .finish()
    }
}

/// What the rows of one account, service, record type and resource share besides their
/// strings of [`SimRow`].
#[derive(Debug, PartialEq, Eq)]
struct RowMeta {
    /// The resource, for services with resource-level data.
    resource_id: Option<Arc<str>>,
    /// Values indexed like [`EXTRA_DIMENSIONS`].
    dimensions: [Arc<str>; EXTRA_DIMENSIONS.len()],
    /// (cost category, value) of the categories the rows are in.
    categories: TagSet,
}

/// The dimensions every row has a value of besides `LINKED_ACCOUNT`, `SERVICE`, `RECORD_TYPE`
/// and `RESOURCE_ID`, as Cost Explorer names them.
pub const EXTRA_DIMENSIONS: [&str; 9] = [
    "AZ",
    "INSTANCE_TYPE",
    "OPERATION",
    "PURCHASE_TYPE",
    "REGION",
    "USAGE_TYPE",
    "PLATFORM",
    "TENANCY",
    "DATABASE_ENGINE",
];

/// Every dimension the simulation gives rows a value of ([`SimRow::dimension`]), as Cost
/// Explorer names them.
pub const DIMENSIONS: [&str; 13] = [
    "LINKED_ACCOUNT",
    "SERVICE",
    "RECORD_TYPE",
    "RESOURCE_ID",
    "AZ",
    "INSTANCE_TYPE",
    "OPERATION",
    "PURCHASE_TYPE",
    "REGION",
    "USAGE_TYPE",
    "PLATFORM",
    "TENANCY",
    "DATABASE_ENGINE",
];

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
        self.meta().resource_id.as_deref()
    }

    /// The row's value of a dimension of [`DIMENSIONS`], as Cost Explorer groups and filters
    /// by it: `RESOURCE_ID` is empty for a row without a resource, and the other dimensions
    /// carry Cost Explorer's placeholder where the row has no value (`NoAZ`, ...). `None` for a
    /// dimension the simulation does not know.
    pub fn dimension(&self, key: &str) -> Option<&str> {
        Some(match key {
            "LINKED_ACCOUNT" => self.account_id(),
            "SERVICE" => self.service(),
            "RECORD_TYPE" => self.record_type(),
            "RESOURCE_ID" => self.resource_id().unwrap_or_default(),
            _ => &self.meta().dimensions[EXTRA_DIMENSIONS.iter().position(|d| *d == key)?],
        })
    }

    /// The row's value of a cost category (`None`: uncategorised, or no such category).
    pub fn cost_category(&self, name: &str) -> Option<&str> {
        self.cost_category_interned(name).map(|v| &**v)
    }

    /// The cost categories the row is in, (name, value).
    pub fn cost_categories(&self) -> impl Iterator<Item = (&str, &str)> {
        self.meta().categories.iter().map(|(k, v)| (&**k, &**v))
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

    /// The row on `day` with `amounts`, sharing everything else (a publication's partial
    /// amounts, a late credit).
    pub(crate) fn republished(&self, day: NaiveDate, amounts: [i64; 5]) -> SimRow {
        SimRow {
            day,
            amounts,
            ..self.clone()
        }
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

    fn meta(&self) -> &RowMeta {
        &self.table.metas[self.meta as usize]
    }

    pub(crate) fn resource_id_interned(&self) -> Option<&Arc<str>> {
        self.meta().resource_id.as_ref()
    }

    pub(crate) fn tag_interned(&self, key: &str) -> Option<&Arc<str>> {
        self.tags.iter().find(|(k, _)| &**k == key).map(|(_, v)| v)
    }

    /// The row's value of `EXTRA_DIMENSIONS[index]`.
    pub(crate) fn extra_dimension_interned(&self, index: usize) -> &Arc<str> {
        &self.meta().dimensions[index]
    }

    pub(crate) fn cost_category_interned(&self, name: &str) -> Option<&Arc<str>> {
        self.meta()
            .categories
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| v)
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
    /// The cost categories the rows are categorised by.
    cost_categories: Vec<CostCategory>,
}

/// A cost category: its rules, in order (the first that applies to a row gives its value),
/// and the value of the rows no rule applies to (`None`: they are uncategorised), as Cost
/// Explorer's cost category definitions have them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostCategory {
    pub name: String,
    pub rules: Vec<CostCategoryRule>,
    pub default_value: Option<String>,
}

/// One rule of a [`CostCategory`]: the value it gives the rows it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CostCategoryRule {
    /// The rows of these linked accounts.
    Accounts {
        value: String,
        accounts: Vec<String>,
    },
    /// The rows whose tag `key` has one of `values`.
    Tag {
        value: String,
        key: String,
        values: Vec<String>,
    },
}

/// Cost categories compiled for categorising many rows: per category, the first rule that
/// lists each account, and the tag rules.
struct CompiledCategories<'a> {
    categories: Vec<CompiledCategory<'a>>,
}

struct CompiledCategory<'a> {
    category: &'a CostCategory,
    /// Account to the index of the first rule that lists it.
    accounts: HashMap<&'a str, usize>,
    /// (rule index, key, values) of the tag rules, in order.
    tags: Vec<(usize, &'a str, &'a [String])>,
}

impl<'a> CompiledCategories<'a> {
    fn new(categories: &'a [CostCategory]) -> Self {
        let categories = categories
            .iter()
            .map(|category| {
                let mut accounts = HashMap::new();
                let mut tags = Vec::new();
                for (index, rule) in category.rules.iter().enumerate() {
                    match rule {
                        CostCategoryRule::Accounts { accounts: ids, .. } => {
                            for id in ids {
                                accounts.entry(id.as_str()).or_insert(index);
                            }
                        }
                        CostCategoryRule::Tag { key, values, .. } => {
                            tags.push((index, key.as_str(), values.as_slice()));
                        }
                    }
                }
                CompiledCategory {
                    category,
                    accounts,
                    tags,
                }
            })
            .collect();
        CompiledCategories { categories }
    }

    /// (name, value) of each category the rows of `account_id` with `tags` are in: what
    /// [`CostCategory::value_for`] says.
    fn values(&self, account_id: &str, tags: &TagSet) -> Vec<(&'a str, &'a str)> {
        self.categories
            .iter()
            .filter_map(|c| {
                let by_account = c.accounts.get(account_id).copied();
                let by_tag = c
                    .tags
                    .iter()
                    .take_while(|(index, ..)| by_account.is_none_or(|a| *index < a))
                    .find(|(_, key, values)| {
                        tags.iter()
                            .any(|(k, v)| **k == **key && values.iter().any(|w| **w == **v))
                    })
                    .map(|(index, ..)| *index);
                let value = match by_tag.or(by_account) {
                    Some(index) => match &c.category.rules[index] {
                        CostCategoryRule::Accounts { value, .. }
                        | CostCategoryRule::Tag { value, .. } => value,
                    },
                    None => c.category.default_value.as_ref()?,
                };
                Some((c.category.name.as_str(), value.as_str()))
            })
            .collect()
    }
}

impl CostCategory {
    /// The value of the rows of `account_id` with `tags` (`None`: uncategorised).
    pub fn value_for<'a>(&'a self, account_id: &str, tags: &[(&str, &str)]) -> Option<&'a str> {
        self.rules
            .iter()
            .find_map(|rule| match rule {
                CostCategoryRule::Accounts { value, accounts } => {
                    accounts.iter().any(|a| a == account_id).then_some(value)
                }
                CostCategoryRule::Tag { value, key, values } => tags
                    .iter()
                    .any(|(k, v)| k == key && values.iter().any(|w| w == v))
                    .then_some(value),
            })
            .or(self.default_value.as_ref())
            .map(String::as_str)
    }
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
pub(crate) fn tag_values(accounts: usize) -> Vec<Vec<&'static str>> {
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

/// Cost Explorer's placeholders for a row without a value of a dimension.
pub const NO_AZ: &str = "NoAZ";
pub const NO_INSTANCE_TYPE: &str = "NoInstanceType";
pub const NO_OPERATION: &str = "NoOperation";
pub const NO_REGION: &str = "NoRegion";
pub const NO_USAGE_TYPE: &str = "NoUsageType";
pub const NO_PLATFORM: &str = "NoPlatform";
pub const NO_TENANCY: &str = "NoTenancy";
pub const NO_DATABASE_ENGINE: &str = "NoDatabaseEngine";

/// Home regions of accounts (picked by a hash of the account id; us-east-1 twice as often),
/// and the prefix of their usage types.
pub const HOME_REGIONS: &[(&str, &str)] = &[
    ("us-east-1", "USE1"),
    ("us-east-1", "USE1"),
    ("us-west-2", "USW2"),
    ("eu-west-1", "EU"),
    ("eu-central-1", "EUC1"),
    ("ap-southeast-2", "APS2"),
    ("ap-northeast-1", "APN1"),
];

/// The usage type prefix of a region of [`HOME_REGIONS`].
fn usage_prefix(region: &str) -> &'static str {
    HOME_REGIONS
        .iter()
        .find(|(r, _)| *r == region)
        .map_or("USE1", |(_, prefix)| prefix)
}

/// EC2 instance types, by the instance's number modulo their count.
pub const EC2_INSTANCE_TYPES: &[&str] = &[
    "m5.large",
    "m5.xlarge",
    "c6i.large",
    "t3.medium",
    "r6g.large",
    "m6g.large",
    "c5.2xlarge",
];

/// RDS instance classes, by the database's number modulo their count.
pub const RDS_INSTANCE_TYPES: &[&str] = &[
    "db.r6g.large",
    "db.m6g.large",
    "db.t4g.medium",
    "db.r6g.xlarge",
];

/// Services Cost Explorer puts in the `global` region.
pub const GLOBAL_SERVICES: &[&str] = &["Amazon CloudFront", "AWS Cost Explorer"];

/// Services whose charges have no region (`NoRegion`).
pub const REGIONLESS_SERVICES: &[&str] = &[
    "Tax",
    "AWS Support (Business)",
    "Savings Plans for AWS Compute usage",
];

/// A stable hash (FNV-1a) of a string: what the per-account choices below are made by.
fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The values of [`EXTRA_DIMENSIONS`] of the rows of one account, service and record type, and
/// resource (its number among the account's resources of the service, and its id), derived
/// from nothing else:
///
/// - REGION: `global` for [`GLOBAL_SERVICES`], `NoRegion` for [`REGIONLESS_SERVICES`]; an RDS
///   database's the region of its ARN; otherwise the account's home region of
///   [`HOME_REGIONS`] (by a hash of the account id), except every fifth EC2 instance (numbers
///   4, 9, ...) which runs in us-west-2 (us-east-1 if that is the home region).
/// - AZ: the region and a letter for EC2 instances (a, b, c by the instance's number modulo 3),
///   RDS databases (a, b by number modulo 2) and the EBS volumes and NAT gateways of
///   `EC2 - Other`; `NoAZ` otherwise.
/// - INSTANCE_TYPE: [`EC2_INSTANCE_TYPES`] and [`RDS_INSTANCE_TYPES`] by the resource's number;
///   `NoInstanceType` otherwise.
/// - PLATFORM: `Windows` for EC2 instances whose number is 3 modulo 7, `Linux/UNIX` for the
///   other instances; `NoPlatform` otherwise. TENANCY: `Shared` for EC2 instances and RDS
///   databases, `NoTenancy` otherwise. DATABASE_ENGINE: `MySQL` (even numbers) or `PostgreSQL`
///   (odd) for RDS databases, `NoDatabaseEngine` otherwise.
/// - PURCHASE_TYPE, by record type: `Savings Plans` for SavingsPlanCoveredUsage,
///   SavingsPlanNegation and SavingsPlanRecurringFee; `Standard Reserved Instances` for
///   DiscountedUsage and RIFee; `Spot Instances` for the Usage of EC2 instance number 13;
///   `On Demand Instances` for everything else (Usage, Credit, Refund, Tax, Support).
/// - USAGE_TYPE and OPERATION: per service, prefixed by the region's code (`USE1-`, `EU-`, ...)
///   as Cost Explorer writes them, e.g. `USE1-BoxUsage:m5.large` / `RunInstances` (Windows:
///   `RunInstances:0002`, Spot: `USE1-SpotUsage:c5.2xlarge` / `RunInstances:SV001`),
///   `USE1-InstanceUsage:db.r6g.large` / `CreateDBInstance:0002` (reserved:
///   `USE1-HeavyUsage:...`), CloudFront's `US-DataTransfer-Out-Bytes` (or `EU-`, `AP-`, by
///   account); `NoUsageType` / `NoOperation` for Tax.
pub fn extra_dimensions(
    account_id: &str,
    service: &str,
    record_type: &str,
    resource: Option<(usize, &str)>,
) -> [String; 9] {
    dimensions_by(
        AccountChoices::of(account_id),
        service,
        record_type,
        resource,
    )
}

/// What the dimensions of an account's rows depend on besides their service, record type
/// and resource: indices of its home region in [`HOME_REGIONS`], of the kind of its
/// `EC2 - Other` cost, and of its CloudFront edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AccountChoices {
    home: usize,
    other: usize,
    edge: usize,
}

impl AccountChoices {
    fn of(account_id: &str) -> Self {
        let hash = stable_hash(account_id);
        AccountChoices {
            home: (hash % HOME_REGIONS.len() as u64) as usize,
            other: ((hash >> 8) % 3) as usize,
            edge: ((hash >> 16) % 3) as usize,
        }
    }
}

/// [`extra_dimensions`] of an account of `choices`.
fn dimensions_by(
    choices: AccountChoices,
    service: &str,
    record_type: &str,
    resource: Option<(usize, &str)>,
) -> [String; 9] {
    let home = HOME_REGIONS[choices.home].0;
    let ec2 = service == "Amazon Elastic Compute Cloud - Compute";
    let rds = service == "Amazon Relational Database Service";
    let region: &str = if GLOBAL_SERVICES.contains(&service) {
        "global"
    } else if REGIONLESS_SERVICES.contains(&service) {
        NO_REGION
    } else {
        match resource {
            Some((_, id)) if id.starts_with("arn:") => id.split(':').nth(3).unwrap_or(home),
            Some((index, _)) if ec2 && index % 5 == 4 => {
                if home == "us-east-1" {
                    "us-west-2"
                } else {
                    "us-east-1"
                }
            }
            _ => home,
        }
    };
    let prefix = usage_prefix(region);
    let purchase_type = match record_type {
        "SavingsPlanCoveredUsage" | "SavingsPlanNegation" | "SavingsPlanRecurringFee" => {
            "Savings Plans"
        }
        "DiscountedUsage" | "RIFee" => "Standard Reserved Instances",
        "Usage" if ec2 && resource.is_some_and(|(index, _)| index == 13) => "Spot Instances",
        _ => "On Demand Instances",
    };
    let mut az = NO_AZ.to_string();
    let mut instance_type = NO_INSTANCE_TYPE;
    let mut platform = NO_PLATFORM;
    let mut tenancy = NO_TENANCY;
    let mut engine = NO_DATABASE_ENGINE;
    let (usage_type, operation) = match (service, resource) {
        (_, Some((index, _))) if ec2 => {
            az = format!("{region}{}", ["a", "b", "c"][index % 3]);
            instance_type = EC2_INSTANCE_TYPES[index % EC2_INSTANCE_TYPES.len()];
            tenancy = "Shared";
            let windows = index % 7 == 3;
            platform = if windows { "Windows" } else { "Linux/UNIX" };
            if purchase_type == "Spot Instances" {
                (
                    format!("{prefix}-SpotUsage:{instance_type}"),
                    "RunInstances:SV001",
                )
            } else {
                (
                    format!("{prefix}-BoxUsage:{instance_type}"),
                    if windows {
                        "RunInstances:0002"
                    } else {
                        "RunInstances"
                    },
                )
            }
        }
        (_, Some((index, _))) if rds => {
            az = format!("{region}{}", ["a", "b"][index % 2]);
            instance_type = RDS_INSTANCE_TYPES[index % RDS_INSTANCE_TYPES.len()];
            tenancy = "Shared";
            let (name, operation) = if index % 2 == 0 {
                ("MySQL", "CreateDBInstance:0002")
            } else {
                ("PostgreSQL", "CreateDBInstance:0014")
            };
            engine = name;
            let kind = if purchase_type == "Standard Reserved Instances" {
                "HeavyUsage"
            } else {
                "InstanceUsage"
            };
            (format!("{prefix}-{kind}:{instance_type}"), operation)
        }
        ("EC2 - Other", _) => match choices.other {
            0 => {
                az = format!("{region}a");
                (format!("{prefix}-EBS:VolumeUsage.gp3"), "CreateVolume-Gp3")
            }
            1 => {
                az = format!("{region}b");
                (format!("{prefix}-NatGateway-Hours"), "NatGateway")
            }
            _ => (
                format!("{prefix}-DataTransfer-Regional-Bytes"),
                "InterZone-In",
            ),
        },
        ("Amazon Simple Storage Service", _) => {
            (format!("{prefix}-TimedStorage-ByteHrs"), "StandardStorage")
        }
        ("Amazon CloudFront", _) => (
            format!(
                "{}-DataTransfer-Out-Bytes",
                ["US", "EU", "AP"][choices.edge]
            ),
            "WebDistribution",
        ),
        ("AWS Lambda", _) => (format!("{prefix}-Lambda-GB-Second"), "Invoke"),
        ("Amazon DynamoDB", _) => (
            format!("{prefix}-ReadRequestUnits"),
            "PayPerRequestThroughput",
        ),
        ("Amazon Elastic Container Service for Kubernetes", _) => (
            format!("{prefix}-AmazonEKS-Hours:perCluster"),
            "CreateOperation",
        ),
        ("AmazonCloudWatch", _) => (format!("{prefix}-CW:MetricMonitorUsage"), "MetricStorage"),
        ("AWS Key Management Service", _) => (format!("{prefix}-KMS-Keys"), "CreateKey"),
        ("Amazon Virtual Private Cloud", _) => (
            format!("{prefix}-PublicIPv4:InUseAddress"),
            "AssociateAddressVPC",
        ),
        ("Savings Plans for AWS Compute usage", _) => {
            ("ComputeSP:3yrPartialUpfront".to_string(), NO_OPERATION)
        }
        ("AWS Support (Business)", _) => ("Dollar".to_string(), NO_OPERATION),
        ("AWS Cost Explorer", _) => ("APIRequest".to_string(), "GetCostAndUsage"),
        _ => (NO_USAGE_TYPE.to_string(), NO_OPERATION),
    };
    [
        az,
        instance_type.to_string(),
        operation.to_string(),
        purchase_type.to_string(),
        region.to_string(),
        usage_type,
        platform.to_string(),
        tenancy.to_string(),
        engine.to_string(),
    ]
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

/// An interned (name, value) pair: a tag or a cost category's value.
type Label = (Arc<str>, Arc<str>);

/// One `Arc` per distinct string.
#[derive(Default)]
struct Interner {
    strings: HashSet<Arc<str>>,
    tag_sets: HashMap<Vec<(usize, usize)>, TagSet>,
    category_sets: HashMap<Vec<Label>, TagSet>,
    /// The account (the address of its id) whose categories `account_categories` holds.
    categories_of: usize,
    /// Per tag set address: the categories of the rows of `categories_of` with those tags.
    account_categories: HashMap<usize, TagSet>,
    /// The metas of the rows planned so far.
    metas: Vec<RowMeta>,
    /// Per [`DimensionsKey`]: the interned values of [`EXTRA_DIMENSIONS`].
    dimensions: HashMap<DimensionsKey, [Arc<str>; EXTRA_DIMENSIONS.len()]>,
}

/// What a row's dimensions are made from: its account's choices, service, record type,
/// resource number and, for an ARN, its region (its index in [`HOME_REGIONS`]).
type DimensionsKey = (
    AccountChoices,
    &'static str,
    &'static str,
    Option<usize>,
    Option<usize>,
);

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

    /// The (name, value) set of the cost categories of the rows of `account_id` with `tags`
    /// (computed once per tag set of each account in a row).
    fn categories(
        &mut self,
        account_id: &str,
        tags: &TagSet,
        categories: &CompiledCategories<'_>,
    ) -> TagSet {
        if self.categories_of != account_id.as_ptr() as usize {
            self.categories_of = account_id.as_ptr() as usize;
            self.account_categories.clear();
        }
        // The caller holds `tags` (its address is not reused) while it plans the account.
        let key = tags.as_ptr() as usize;
        if let Some(set) = self.account_categories.get(&key) {
            return set.clone();
        }
        let pairs: Vec<Label> = categories
            .values(account_id, tags)
            .into_iter()
            .map(|(name, value)| (self.string(name), self.string(value)))
            .collect();
        let set = match self.category_sets.get(&pairs) {
            Some(set) => set.clone(),
            None => {
                let set: TagSet = Arc::from(pairs.clone());
                self.category_sets.insert(pairs, set.clone());
                set
            }
        };
        self.account_categories.insert(key, set.clone());
        set
    }

    /// What the rows of one account, service, record type and resource share: its index in
    /// `metas`.
    fn meta(
        &mut self,
        (account_id, service, record_type): (&str, &'static str, &'static str),
        resource: Option<(usize, &Arc<str>)>,
        tags: &TagSet,
        categories: &CompiledCategories<'_>,
    ) -> u32 {
        let choices = AccountChoices::of(account_id);
        // The dimensions depend on the account only through its choices (and on an ARN's
        // region): made and interned once per key.
        let arn_region = resource
            .and_then(|(_, id)| id.strip_prefix("arn:"))
            .map(|id| {
                let region = id.split(':').nth(2).unwrap_or_default();
                HOME_REGIONS.iter().position(|(r, _)| *r == region)
            });
        let key = (
            choices,
            service,
            record_type,
            resource.map(|(index, _)| index),
            arn_region.flatten(),
        );
        let known = arn_region.is_none_or(|r| r.is_some());
        let dimensions = match self.dimensions.get(&key).filter(|_| known) {
            Some(dimensions) => dimensions.clone(),
            None => {
                let values = dimensions_by(
                    choices,
                    service,
                    record_type,
                    resource.map(|(index, id)| (index, &**id)),
                );
                let dimensions = values.map(|v| self.string(&v));
                if known {
                    self.dimensions.insert(key, dimensions.clone());
                }
                dimensions
            }
        };
        let meta = RowMeta {
            resource_id: resource.map(|(_, id)| id.clone()),
            dimensions,
            categories: self.categories(account_id, tags, categories),
        };
        self.metas.push(meta);
        (self.metas.len() - 1) as u32
    }
}

/// What every row of one account and service shares, per resource (one "resource" for
/// services billed in one line).
struct ServicePlan {
    tags: Vec<TagSet>,
    /// Per record type of the service (indexed like its record types in [`SERVICES`]), per
    /// resource.
    metas: Vec<Vec<u32>>,
}

/// The interned strings of one account's rows.
struct AccountPlan {
    id: Arc<str>,
    /// Indexed like [`SERVICES`].
    services: Vec<ServicePlan>,
    /// The meta of the account's AWS Cost Explorer row.
    cost_explorer: u32,
}

impl Dataset {
    /// Generates realistic rows: a dozen services, usage, savings plans, reservations, support,
    /// tax, negative credits and refunds, weekly rhythm, a partial "today". No cost categories.
    pub fn generate(spec: &DatasetSpec<'_>) -> Self {
        Self::generate_with_cost_categories(spec, &[])
    }

    /// Generates the rows of [`Dataset::generate`] (the same rows), categorised by
    /// `categories`.
    pub fn generate_with_cost_categories(
        spec: &DatasetSpec<'_>,
        categories: &[CostCategory],
    ) -> Self {
        let mut rng = fastrand::Rng::with_seed(spec.seed);
        let mut interner = Interner::default();
        let compiled = CompiledCategories::new(categories);
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
                    .map(|(service, service_record_types, _)| {
                        let resources = resource_count(service);
                        let resource_ids: Vec<Option<Arc<str>>> = (0..resources.max(1))
                            .map(|resource| {
                                (resources > 0).then(|| {
                                    interner.string(&resource_id(service, account_id, resource))
                                })
                            })
                            .collect();
                        let tags: Vec<TagSet> = (0..resources.max(1))
                            .map(|resource| {
                                if *service == "Tax" {
                                    untagged.clone()
                                } else {
                                    interner
                                        .tag_set(tags_for(a, service, resource, &values), &values)
                                }
                            })
                            .collect();
                        let metas = service_record_types
                            .iter()
                            .map(|record_type| {
                                (0..resources.max(1))
                                    .map(|resource| {
                                        interner.meta(
                                            (account_id, service, record_type),
                                            resource_ids[resource]
                                                .as_ref()
                                                .map(|id| (resource, id)),
                                            &tags[resource],
                                            &compiled,
                                        )
                                    })
                                    .collect()
                            })
                            .collect();
                        ServicePlan { tags, metas }
                    })
                    .collect(),
                cost_explorer: interner.meta(
                    (account_id, "AWS Cost Explorer", "Usage"),
                    None,
                    &untagged,
                    &compiled,
                ),
            })
            .collect();

        let table = Arc::new(MetaTable {
            metas: std::mem::take(&mut interner.metas),
        });
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
                                tags: service_plan.tags[resource].clone(),
                                meta: service_plan.metas[t][resource],
                                table: table.clone(),
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
                    tags: untagged.clone(),
                    meta: plan.cost_explorer,
                    table: table.clone(),
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
            cost_categories: categories.to_vec(),
        }
    }

    /// The dataset with its rows categorised by `categories` instead (and nothing else
    /// changed).
    pub fn with_cost_categories(mut self, categories: Vec<CostCategory>) -> Self {
        let mut interner = Interner::default();
        let compiled = CompiledCategories::new(&categories);
        // Per (table, meta, account, tag set) of the rows: the index of their new meta. No row
        // changes until every new meta is made, so no address is reused meanwhile.
        let mut indices: HashMap<(usize, u32, usize, usize), u32> = HashMap::new();
        let mut metas = Vec::new();
        let new: Vec<u32> = self
            .rows
            .iter()
            .map(|row| {
                let key = (
                    Arc::as_ptr(&row.table) as usize,
                    row.meta,
                    row.account_id.as_ptr() as usize,
                    row.tags.as_ptr() as usize,
                );
                *indices.entry(key).or_insert_with(|| {
                    let meta = row.meta();
                    metas.push(RowMeta {
                        resource_id: meta.resource_id.clone(),
                        dimensions: meta.dimensions.clone(),
                        categories: interner.categories(&row.account_id, &row.tags, &compiled),
                    });
                    (metas.len() - 1) as u32
                })
            })
            .collect();
        let table = Arc::new(MetaTable { metas });
        for (row, meta) in self.rows.iter_mut().zip(new) {
            row.meta = meta;
            row.table = table.clone();
        }
        drop(compiled);
        self.cost_categories = categories;
        self
    }

    /// A dataset of the same accounts and cost categories with other rows (sorted by day),
    /// `today` and first Estimated day.
    pub(crate) fn with_rows(
        &self,
        rows: Vec<SimRow>,
        today: Option<NaiveDate>,
        estimated_from: Option<NaiveDate>,
    ) -> Dataset {
        Dataset {
            accounts: self.accounts.clone(),
            rows,
            estimated_from,
            today,
            cost_categories: self.cost_categories.clone(),
        }
    }

    /// The cost categories the rows are categorised by.
    pub fn cost_categories(&self) -> &[CostCategory] {
        &self.cost_categories
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
    use std::collections::BTreeMap;

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
    fn every_row_has_a_value_of_each_dimension_derived_from_its_fields() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let a = Dataset::generate(&small_spec(today));
        let regions: std::collections::BTreeSet<&str> = HOME_REGIONS
            .iter()
            .map(|(r, _)| *r)
            .chain(["global", NO_REGION])
            .collect();
        // (account, service, record type, resource) -> dimensions.
        let mut seen: HashMap<(&str, &str, &str, Option<&str>), Vec<&str>> = HashMap::new();
        let mut values: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
        for row in &a.rows {
            let dims: Vec<&str> = DIMENSIONS
                .iter()
                .map(|d| row.dimension(d).unwrap())
                .collect();
            for (d, v) in DIMENSIONS.iter().zip(&dims) {
                values.entry(d).or_default().insert(v);
            }
            let key = (
                row.account_id(),
                row.service(),
                row.record_type(),
                row.resource_id(),
            );
            assert_eq!(seen.entry(key).or_insert_with(|| dims.clone()), &dims);
            // Interned: one allocation per value.
            for i in 0..EXTRA_DIMENSIONS.len() {
                let first = a.rows[0].extra_dimension_interned(i);
                let here = row.extra_dimension_interned(i);
                assert!(**first != **here || Arc::ptr_eq(first, here));
            }
            let dim = |d: &str| row.dimension(d).unwrap();
            assert!(regions.contains(dim("REGION")), "{row:?}");
            assert!(dim("AZ") == NO_AZ || dim("AZ").starts_with(dim("REGION")));
            assert_eq!(dim("RESOURCE_ID"), row.resource_id().unwrap_or_default());
            let expected_purchase = match row.record_type() {
                "SavingsPlanCoveredUsage" | "SavingsPlanNegation" | "SavingsPlanRecurringFee" => {
                    vec!["Savings Plans"]
                }
                "DiscountedUsage" | "RIFee" => vec!["Standard Reserved Instances"],
                "Usage" => vec!["On Demand Instances", "Spot Instances"],
                _ => vec!["On Demand Instances"],
            };
            assert!(expected_purchase.contains(&dim("PURCHASE_TYPE")), "{row:?}");
            match (row.service(), row.resource_id()) {
                ("Amazon Elastic Compute Cloud - Compute", Some(_)) => {
                    assert!(EC2_INSTANCE_TYPES.contains(&dim("INSTANCE_TYPE")));
                    assert!(dim("USAGE_TYPE").ends_with(dim("INSTANCE_TYPE")));
                    assert!(dim("OPERATION").starts_with("RunInstances"));
                    assert_ne!(dim("AZ"), NO_AZ);
                    assert!(["Linux/UNIX", "Windows"].contains(&dim("PLATFORM")));
                }
                ("Amazon Relational Database Service", Some(id)) => {
                    assert!(RDS_INSTANCE_TYPES.contains(&dim("INSTANCE_TYPE")));
                    assert!(id.contains(&format!(":{}:", dim("REGION"))));
                    assert!(dim("OPERATION").starts_with("CreateDBInstance"));
                    assert!(["MySQL", "PostgreSQL"].contains(&dim("DATABASE_ENGINE")));
                }
                (service, _) => {
                    assert_eq!(dim("INSTANCE_TYPE"), NO_INSTANCE_TYPE);
                    assert_eq!(dim("DATABASE_ENGINE"), NO_DATABASE_ENGINE);
                    assert_eq!(dim("PLATFORM"), NO_PLATFORM);
                    assert_eq!(dim("TENANCY"), NO_TENANCY);
                    if GLOBAL_SERVICES.contains(&service) {
                        assert_eq!(dim("REGION"), "global");
                    }
                    if service == "Tax" {
                        assert_eq!(dim("REGION"), NO_REGION);
                        assert_eq!(dim("USAGE_TYPE"), NO_USAGE_TYPE);
                        assert_eq!(dim("OPERATION"), NO_OPERATION);
                    }
                }
            }
        }
        assert_eq!(a.rows[0].dimension("BILLING_ENTITY"), None);
        assert_eq!(a.rows[0].dimension("az"), None);
        // Varied: several regions, AZs, instance types, usage types and purchase types.
        for (dimension, at_least) in [
            ("REGION", 4),
            ("AZ", 6),
            ("INSTANCE_TYPE", 8),
            ("USAGE_TYPE", 20),
            ("OPERATION", 10),
            ("PURCHASE_TYPE", 4),
            ("PLATFORM", 3),
            ("DATABASE_ENGINE", 3),
        ] {
            assert!(
                values[dimension].len() >= at_least,
                "{dimension}: {:?}",
                values[dimension]
            );
        }
        // Usage types as AWS writes them.
        assert!(
            values["USAGE_TYPE"]
                .iter()
                .any(|u| u.contains("-BoxUsage:"))
        );
        assert!(
            values["USAGE_TYPE"]
                .iter()
                .any(|u| u.ends_with("-DataTransfer-Out-Bytes"))
        );
    }

    #[test]
    fn rows_are_categorised_by_the_first_rule_that_applies() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let categories = vec![
            CostCategory {
                name: "Team".into(),
                rules: vec![
                    CostCategoryRule::Tag {
                        value: "Platform".into(),
                        key: "team".into(),
                        values: vec!["platform".into()],
                    },
                    CostCategoryRule::Accounts {
                        value: "Members".into(),
                        accounts: vec!["222222222222".into(), "444444444444".into()],
                    },
                ],
                default_value: None,
            },
            CostCategory {
                name: "Owner".into(),
                rules: vec![CostCategoryRule::Accounts {
                    value: "Payer".into(),
                    accounts: vec!["111111111111".into()],
                }],
                default_value: Some("Others".into()),
            },
            CostCategory {
                name: "Mixed".into(),
                rules: vec![
                    CostCategoryRule::Tag {
                        value: "Staging".into(),
                        key: "env".into(),
                        values: vec!["staging".into()],
                    },
                    CostCategoryRule::Accounts {
                        value: "Payer".into(),
                        accounts: vec!["111111111111".into()],
                    },
                    CostCategoryRule::Tag {
                        value: "Data".into(),
                        key: "team".into(),
                        values: vec!["data".into(), "platform".into()],
                    },
                    CostCategoryRule::Accounts {
                        value: "Never".into(),
                        accounts: vec!["111111111111".into(), "222222222222".into()],
                    },
                ],
                default_value: None,
            },
        ];
        let plain = Dataset::generate(&small_spec(today));
        assert!(plain.cost_categories().is_empty());
        assert!(
            plain
                .rows
                .iter()
                .all(|r| r.cost_categories().next().is_none())
        );
        let generated = Dataset::generate_with_cost_categories(&small_spec(today), &categories);
        let later = plain.clone().with_cost_categories(categories.clone());
        assert_eq!(generated, later);
        assert_eq!(generated.cost_categories(), &categories[..]);
        assert_eq!(generated.rows.len(), plain.rows.len());
        let mut uncategorised = 0;
        for (row, before) in generated.rows.iter().zip(&plain.rows) {
            // Nothing else changes.
            assert_eq!(row.day, before.day);
            assert_eq!(row.amounts, before.amounts);
            for d in DIMENSIONS {
                assert_eq!(row.dimension(d), before.dimension(d));
            }
            let team = if row.tag("team") == Some("platform") {
                Some("Platform")
            } else if ["222222222222", "444444444444"].contains(&row.account_id()) {
                Some("Members")
            } else {
                None
            };
            assert_eq!(row.cost_category("Team"), team, "{row:?}");
            uncategorised += usize::from(team.is_none());
            let owner = if row.account_id() == "111111111111" {
                "Payer"
            } else {
                "Others"
            };
            assert_eq!(row.cost_category("Owner"), Some(owner));
            assert_eq!(row.cost_category("Nope"), None);
            // Every category as its rules say, in order.
            let tags: Vec<(&str, &str)> = row.tags().collect();
            for category in &categories {
                assert_eq!(
                    row.cost_category(&category.name),
                    category.value_for(row.account_id(), &tags),
                    "{row:?}"
                );
            }
            let mixed = match (row.tag("env"), row.account_id(), row.tag("team")) {
                (Some("staging"), ..) => Some("Staging"),
                (_, "111111111111", _) => Some("Payer"),
                (_, _, Some("data" | "platform")) => Some("Data"),
                (_, "222222222222", _) => Some("Never"),
                _ => None,
            };
            assert_eq!(row.cost_category("Mixed"), mixed, "{row:?}");
            let names: Vec<&str> = row.cost_categories().map(|(n, _)| n).collect();
            assert_eq!(
                names.len(),
                1 + usize::from(team.is_some()) + usize::from(mixed.is_some())
            );
        }
        assert!(uncategorised > 0 && uncategorised < generated.rows.len());
        // Re-categorised without categories: as generated without them.
        assert_eq!(generated.with_cost_categories(Vec::new()), plain);
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
