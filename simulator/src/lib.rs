//! aws-cost-simulator: a simulated AWS Cost Explorer, STS and Organizations with realistic
//! data, which aws-cost-exporter reaches through the real SDK code path (endpoint override).
//! Used by the exporter's `--demo` and `--demo.simulator` and by its tests; it does not depend
//! on the exporter.

pub mod commitments;
pub mod dataset;
pub mod publications;
pub mod s3;
pub mod simulator;

use chrono::NaiveDate;

pub use dataset::{CostCategory, CostCategoryRule, CostMetric, Dataset, DatasetSpec};
pub use publications::{Clock, Edition, LateCredit, Publications, fixed_clock, system_clock};
pub use s3::S3Simulator;
pub use simulator::{Arrival, Behavior, LoggedRequest, Simulator, SimulatorBuilder};

/// The accounts of the demo organization: the payer first, then its members.
pub const DEMO_ORGANIZATION: &[(&str, &str)] = &[
    ("111111111111", "Management"),
    ("333333333333", "Production"),
    ("444444444444", "Staging"),
    ("555555555555", "Data \"Lake\" \\ Analytics"),
];

/// Members of the demo organization without cost yet (named only by Organizations).
pub const DEMO_IDLE_MEMBERS: &[(&str, &str)] = &[("666666666666", "Sandbox (new)")];

/// The standalone demo account reached through AssumeRole.
pub const DEMO_WORKLOAD: &[(&str, &str)] = &[("222222222222", "Workload")];

/// Groups per page in the demo (counted across all of a result's periods).
pub const DEMO_PAGE_SIZE: usize = 500;

/// The demo organization's default size: [`DEMO_ORGANIZATION`].
pub const DEMO_SCALE: usize = DEMO_ORGANIZATION.len();

/// Days of history before today in the demo at [`DEMO_SCALE`] (two months).
const DEMO_HISTORY_DAYS: u64 = 62;

/// The most days before today a refresh reads from: matches the exporter's largest
/// `data_delay_days` (its `config::MAX_DATA_DELAY_DAYS`).
const MAX_DATA_DELAY_DAYS: u64 = 31;

/// Days of history before today in larger demo organizations: all the exporter reads. A
/// refresh queries from the first of the month or from its data day, whichever is earlier
/// (`data_delay_days` is at most 31), so 31 days back; the forecast averages the 7 complete
/// days before today, and resource-level data covers the last 14 days, both within them.
/// Fewer days keep a 1,500-account organization's rows to a few million.
const LARGE_DEMO_HISTORY_DAYS: u64 = MAX_DATA_DELAY_DAYS;

/// Business domains and environments that generated member accounts are named after.
const ACCOUNT_DOMAINS: &[&str] = &[
    "payments",
    "search",
    "data-lake",
    "identity",
    "checkout",
    "catalog",
    "billing",
    "analytics",
    "ml-platform",
    "messaging",
    "notifications",
    "inventory",
    "shipping",
    "fraud",
    "ledger",
    "reporting",
    "media",
    "streaming",
    "recommendations",
    "auth",
    "api-gateway",
    "mobile",
    "web",
    "crm",
    "marketing",
    "support",
    "observability",
    "logging",
    "security",
    "networking",
    "edge",
    "devtools",
    "ci",
    "registry",
    "warehouse",
    "etl",
    "geo",
    "pricing",
    "orders",
    "accounts",
    "risk",
    "compliance",
    "people",
    "finance",
    "partners",
    "ads",
    "experiments",
    "growth",
    "content",
    "translation",
];
const ACCOUNT_REGIONS: &[&str] = &["", "eu", "us", "apac", "latam", "ca", "me"];
const ACCOUNT_ENVIRONMENTS: &[&str] = &[
    "prod", "staging", "dev", "qa", "sandbox", "perf", "dr", "shared",
];

/// The accounts of a demo organization of `scale` accounts with cost (at least one): the
/// accounts of [`DEMO_ORGANIZATION`] first, then generated members named like
/// "payments-prod" or "data-lake-eu-staging", with unique 12-digit ids. Deterministic.
pub fn demo_organization(scale: usize) -> Vec<(String, String)> {
    let scale = scale.max(1);
    let mut accounts: Vec<(String, String)> = DEMO_ORGANIZATION
        .iter()
        .take(scale)
        .map(|(id, name)| (id.to_string(), name.to_string()))
        .collect();
    let members = scale - accounts.len();
    if members == 0 {
        return accounts;
    }
    let mut rng = fastrand::Rng::with_seed(1_500);
    let mut names: Vec<String> = ACCOUNT_REGIONS
        .iter()
        .flat_map(|region| {
            ACCOUNT_DOMAINS.iter().flat_map(move |domain| {
                ACCOUNT_ENVIRONMENTS.iter().map(move |env| {
                    if region.is_empty() {
                        format!("{domain}-{env}")
                    } else {
                        format!("{domain}-{region}-{env}")
                    }
                })
            })
        })
        .collect();
    // Regional accounts come after the global ones; each group in a shuffled order.
    let global = ACCOUNT_DOMAINS.len() * ACCOUNT_ENVIRONMENTS.len();
    rng.shuffle(&mut names[..global]);
    rng.shuffle(&mut names[global..]);
    // Beyond the word lists, numbered accounts ("payments-prod-2"; no name ends in a digit).
    let combinations = names.len();
    for round in 2.. {
        if names.len() >= members {
            break;
        }
        let numbered: Vec<String> = names[..combinations]
            .iter()
            .map(|name| format!("{name}-{round}"))
            .collect();
        names.extend(numbered);
    }
    // Ids: 12 digits, unique, not a demo account, and unique modulo 0xfff_ffff too since
    // instance ids are derived from the id that way.
    let reserved = DEMO_ORGANIZATION
        .iter()
        .chain(DEMO_IDLE_MEMBERS)
        .chain(DEMO_WORKLOAD)
        .map(|(id, _)| *id)
        .chain(["999999999999"]);
    let mut taken: std::collections::HashSet<u64> = reserved
        .filter_map(|id| id.parse::<u64>().ok())
        .map(|id| id % 0xfff_ffff)
        .collect();
    for name in names.into_iter().take(members) {
        let id = loop {
            let id = rng.u64(100_000_000_000..1_000_000_000_000);
            if taken.insert(id % 0xfff_ffff) {
                break id;
            }
        };
        accounts.push((id.to_string(), name));
    }
    accounts
}

/// The environments of generated accounts, by the last word of their names, as the demo's
/// "Environment" cost category names them.
const ENVIRONMENT_VALUES: &[(&str, &str)] = &[
    ("prod", "Production"),
    ("staging", "Staging"),
    ("dev", "Development"),
    ("qa", "QA"),
    ("sandbox", "Sandbox"),
    ("perf", "Performance"),
    ("dr", "Disaster Recovery"),
    ("shared", "Shared Services"),
];

/// The "Environment" of an account of a demo organization: the demo's Production, Staging and
/// data lake accounts are Production, Staging and Production; a generated account's is named
/// by the last word of its name ("payments-eu-prod", "payments-prod-2": Production); the
/// management account has none.
fn environment_of(id: &str, name: &str) -> Option<&'static str> {
    match id {
        "333333333333" | "555555555555" => return Some("Production"),
        "444444444444" => return Some("Staging"),
        "111111111111" => return None,
        _ => {}
    }
    let name = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
    let word = name.rsplit('-').next()?;
    ENVIRONMENT_VALUES
        .iter()
        .find(|(w, _)| *w == word)
        .map(|(_, value)| *value)
}

/// A tag value as a cost category value: words capitalised, joined by spaces (cost category
/// values allow letters, digits, spaces, '-' and '_'): `web "frontend"` is `Web Frontend`.
fn category_value(tag_value: &str) -> String {
    tag_value
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The cost categories of a demo organization of `accounts` (id, name), in its payer's
/// dataset:
///
/// - "Team": first, one rule per value of the `team` tag the organization's rows carry: rows
///   tagged `team=platform` are `Platform`, `team=web "frontend"` `Web Frontend` (each word
///   capitalised); then the untagged rest of the accounts whose names contain "data" (any
///   case; the demo's data lake) is `Data`; everything else (untagged rows of other accounts,
///   Tax, the Cost Explorer row) is uncategorised (`Team$`).
/// - "Environment": by account: the demo's
///   Production and data lake accounts `Production`, Staging `Staging`, a generated account
///   by the last word of its name (`prod` → `Production`, `staging` → `Staging`, `dev` →
///   `Development`, `qa` → `QA`, `sandbox` → `Sandbox`, `perf` → `Performance`, `dr` →
///   `Disaster Recovery`, `shared` → `Shared Services`); the management account uncategorised.
///
/// Neither has a default value.
pub fn demo_cost_categories(accounts: &[(&str, &str)]) -> Vec<CostCategory> {
    let teams = &dataset::tag_values(accounts.len())[0];
    let mut team_rules: Vec<CostCategoryRule> = teams
        .iter()
        .map(|team| CostCategoryRule::Tag {
            value: category_value(team),
            key: "team".to_string(),
            values: vec![team.to_string()],
        })
        .collect();
    team_rules.push(CostCategoryRule::Accounts {
        value: "Data".to_string(),
        accounts: accounts
            .iter()
            .filter(|(_, name)| name.to_lowercase().contains("data"))
            .map(|(id, _)| id.to_string())
            .collect(),
    });
    let mut environments: Vec<(&str, Vec<String>)> = Vec::new();
    for (id, name) in accounts {
        if let Some(environment) = environment_of(id, name) {
            match environments.iter_mut().find(|(e, _)| *e == environment) {
                Some((_, ids)) => ids.push(id.to_string()),
                None => environments.push((environment, vec![id.to_string()])),
            }
        }
    }
    vec![
        CostCategory {
            name: "Team".to_string(),
            rules: team_rules,
            default_value: None,
        },
        CostCategory {
            name: "Environment".to_string(),
            rules: environments
                .into_iter()
                .map(|(value, accounts)| CostCategoryRule::Accounts {
                    value: value.to_string(),
                    accounts,
                })
                .collect(),
            default_value: None,
        },
    ]
}

/// The demo's datasets for `scale` accounts: the organization's payer's (with the cost
/// categories of [`demo_cost_categories`]), and the workload account's (without any).
pub fn demo_datasets(today: NaiveDate, scale: usize) -> (Dataset, Dataset) {
    let history_days = if scale > DEMO_SCALE {
        LARGE_DEMO_HISTORY_DAYS
    } else {
        DEMO_HISTORY_DAYS
    };
    let accounts = demo_organization(scale);
    let accounts: Vec<(&str, &str)> = accounts
        .iter()
        .map(|(id, name)| (id.as_str(), name.as_str()))
        .collect();
    let organization = Dataset::generate_with_cost_categories(
        &DatasetSpec {
            seed: 20_261_123,
            accounts: &accounts,
            today,
            history_days,
            estimated_days: 2,
            scale: 1.0,
            idle_accounts: DEMO_IDLE_MEMBERS,
        },
        &demo_cost_categories(&accounts),
    );
    let workload = Dataset::generate(&DatasetSpec {
        seed: 42,
        accounts: DEMO_WORKLOAD,
        today,
        history_days,
        estimated_days: 2,
        scale: 0.15,
        idle_accounts: &[],
    });
    (organization, workload)
}

/// The demo's simulated AWS, with data up to `today` for an organization of `scale`
/// accounts, ready to start.
pub fn demo_simulator(today: NaiveDate, scale: usize) -> SimulatorBuilder {
    let (organization, workload) = demo_datasets(today, scale);
    Simulator::builder()
        .account("111111111111", organization)
        .account("222222222222", workload)
        .access_key(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "111111111111",
        )
        // The security account's identity has no Cost Explorer access of its own.
        .access_key(
            "AKIAI44QH8DHBEXAMPLE",
            "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
            "999999999999",
        )
        .role("222222222222", "CostExporter", Some("demo-external-id"))
        .resource_level_data("111111111111")
        .page_size(DEMO_PAGE_SIZE)
}

/// The demo's simulated AWS replaying `day` as Cost Explorer publishes it: the datasets of
/// [`demo_simulator`] generated through the day after `day` (so `day` has whole amounts and the
/// next day exists), served as `publications` have published them at the time `clock` reads
/// (see [`publications`]). With a clock on `day`, the day's cost grows at each publication,
/// yesterday turns final and a late credit lands; after midnight, the next day begins.
pub fn demo_replay(
    day: NaiveDate,
    scale: usize,
    publications: Publications,
    clock: Clock,
) -> SimulatorBuilder {
    demo_simulator(day.succ_opt().unwrap_or(day), scale)
        .publications(publications)
        .clock(clock)
}

/// Starts the demo's simulated AWS on loopback, with data up to `today` for an organization
/// of `scale` accounts ([`DEMO_SCALE`]: the demo organization).
pub async fn start_simulator(today: NaiveDate, scale: usize) -> std::io::Result<Simulator> {
    demo_simulator(today, scale).start().await
}

/// Like [`start_simulator`], listening on `listen` (such as "127.0.0.1:18080").
pub async fn start_simulator_on(
    today: NaiveDate,
    scale: usize,
    listen: &str,
) -> std::io::Result<Simulator> {
    demo_simulator(today, scale).start_on(listen).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use chrono::Days;

    use super::*;

    fn owned(accounts: &[(&str, &str)]) -> Vec<(String, String)> {
        accounts
            .iter()
            .map(|(id, name)| (id.to_string(), name.to_string()))
            .collect()
    }

    #[test]
    fn the_default_scale_is_the_demo_organization() {
        assert_eq!(DEMO_SCALE, 4);
        assert_eq!(demo_organization(DEMO_SCALE), owned(DEMO_ORGANIZATION));
        assert_eq!(demo_organization(2), owned(&DEMO_ORGANIZATION[..2]));
        assert_eq!(demo_organization(0), owned(&DEMO_ORGANIZATION[..1]));
    }

    #[test]
    fn large_organizations_have_unique_realistic_accounts() {
        let accounts = demo_organization(1_500);
        assert_eq!(accounts.len(), 1_500);
        assert_eq!(accounts[..4], owned(DEMO_ORGANIZATION)[..]);
        let ids: BTreeSet<&str> = accounts.iter().map(|(id, _)| id.as_str()).collect();
        let names: BTreeSet<&str> = accounts.iter().map(|(_, name)| name.as_str()).collect();
        assert_eq!(ids.len(), 1_500);
        assert_eq!(names.len(), 1_500);
        for (id, name) in &accounts[4..] {
            assert!(
                id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()),
                "{id}"
            );
            assert!(
                name.contains('-')
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{name}"
            );
        }
        for (reserved, _) in DEMO_IDLE_MEMBERS.iter().chain(DEMO_WORKLOAD) {
            assert!(!ids.contains(reserved));
        }
        assert!(!ids.contains("999999999999"));
        // Instance ids derive from the account id modulo 0xfff_ffff: unique too.
        let residues: BTreeSet<u64> = ids
            .iter()
            .map(|id| id.parse::<u64>().unwrap() % 0xfff_ffff)
            .collect();
        assert_eq!(residues.len(), 1_500);
        assert!(names.contains("payments-prod") || names.iter().any(|n| n.ends_with("-prod")));
        // Deterministic, and a smaller organization is the start of a larger one.
        assert_eq!(demo_organization(1_500), accounts);
        assert_eq!(demo_organization(100), accounts[..100]);
        // Beyond the word lists, names are numbered.
        let huge = demo_organization(6_000);
        let names: BTreeSet<&str> = huge.iter().map(|(_, name)| name.as_str()).collect();
        assert_eq!(names.len(), 6_000);
        assert!(names.contains("payments-prod-2"));
    }

    #[test]
    fn scaled_datasets_cover_every_account_and_what_the_exporter_reads() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let (organization, workload) = demo_datasets(today, 60);
        assert_eq!(organization.accounts.len(), 60 + DEMO_IDLE_MEMBERS.len());
        assert_eq!(organization.accounts["333333333333"], "Production");
        let with_cost: BTreeSet<&str> = organization.rows.iter().map(|r| r.account_id()).collect();
        assert_eq!(with_cost.len(), 60);
        assert!(!with_cost.contains(DEMO_IDLE_MEMBERS[0].0));
        // The days a refresh reads, with data_delay_days up to 31.
        for dataset in [&organization, &workload] {
            assert_eq!(
                dataset.rows.first().map(|r| r.day),
                Some(today - Days::new(31))
            );
            assert_eq!(dataset.rows.last().map(|r| r.day), Some(today));
        }
        // Every account runs its own 14 instances.
        let instances: BTreeSet<&str> = organization
            .rows
            .iter()
            .filter_map(|r| r.resource_id())
            .filter(|id| id.starts_with("i-"))
            .collect();
        assert_eq!(instances.len(), 60 * 14);
        // One more team for every 50 accounts.
        let teams: BTreeSet<&str> = organization
            .rows
            .iter()
            .filter_map(|r| r.tag("team"))
            .collect();
        assert_eq!(teams.len(), 4);
        assert_eq!(demo_datasets(today, 60), (organization, workload));
        // The demo itself keeps two months.
        let (organization, _) = demo_datasets(today, DEMO_SCALE);
        assert_eq!(
            organization.rows.first().map(|r| r.day),
            Some(today - Days::new(62))
        );
        assert_eq!(organization.accounts.len(), 5);
    }

    /// A hash of every row's fields other than its derived dimensions and cost categories.
    fn rows_fingerprint(rows: &[dataset::SimRow]) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for r in rows {
            let line = format!(
                "{}|{}|{}|{}|{:?}|{:?}|{:?}\n",
                r.day,
                r.account_id(),
                r.service(),
                r.record_type(),
                r.amounts,
                r.resource_id(),
                r.tags().collect::<Vec<_>>()
            );
            for b in line.bytes() {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
        }
        hash
    }

    #[test]
    fn the_demo_rows_are_those_generated_before_dimensions_and_cost_categories() {
        // Fingerprints taken before rows had more dimensions than account, service, record
        // type and resource, or cost categories: those add to the rows, and change none.
        let today = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        for (scale, expected) in [
            (
                DEMO_SCALE,
                [
                    (17_896, 0xa50b_654a_858b_bf5c),
                    (4_053, 0x9f69_58cd_ff0e_a3cf),
                ],
            ),
            (
                60,
                [
                    (136_890, 0xfb8f_3104_017e_a864),
                    (2_068, 0xaedf_5ddc_0f6b_5a79),
                ],
            ),
        ] {
            let (organization, workload) = demo_datasets(today, scale);
            for (dataset, (rows, fingerprint)) in [organization, workload].iter().zip(expected) {
                assert_eq!(dataset.rows.len(), rows, "scale {scale}");
                assert_eq!(
                    rows_fingerprint(&dataset.rows),
                    fingerprint,
                    "scale {scale}"
                );
            }
        }
    }

    #[test]
    fn the_demo_organization_has_team_and_environment_cost_categories() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let (organization, workload) = demo_datasets(today, DEMO_SCALE);
        assert!(workload.cost_categories().is_empty());
        assert!(
            workload
                .rows
                .iter()
                .all(|r| r.cost_categories().next().is_none())
        );
        let names: Vec<&str> = organization
            .cost_categories()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["Team", "Environment"]);
        let mut teams = BTreeSet::new();
        let mut uncategorised = 0;
        for row in &organization.rows {
            let team = match row.tag("team") {
                Some("platform") => Some("Platform"),
                Some("data") => Some("Data"),
                Some("web \"frontend\"") => Some("Web Frontend"),
                Some(other) => panic!("team {other}"),
                None if row.account_id() == "555555555555" => Some("Data"),
                None => None,
            };
            assert_eq!(row.cost_category("Team"), team, "{row:?}");
            teams.extend(team);
            uncategorised += usize::from(team.is_none());
            let environment = match row.account_id() {
                "333333333333" | "555555555555" => Some("Production"),
                "444444444444" => Some("Staging"),
                _ => None,
            };
            assert_eq!(row.cost_category("Environment"), environment);
        }
        assert_eq!(teams.len(), 3);
        assert!(uncategorised > 100);
        // Generated accounts by the last word of their names.
        let accounts = demo_organization(60);
        let categories = demo_cost_categories(
            &accounts
                .iter()
                .map(|(id, name)| (id.as_str(), name.as_str()))
                .collect::<Vec<_>>(),
        );
        let environment = &categories[1];
        for (id, name) in &accounts[4..] {
            let word = name.rsplit('-').next().unwrap();
            let expected = ENVIRONMENT_VALUES
                .iter()
                .find(|(w, _)| *w == word)
                .map(|(_, v)| *v);
            assert!(expected.is_some(), "{name}");
            assert_eq!(environment.value_for(id, &[]), expected, "{name}");
        }
        assert_eq!(environment.value_for("111111111111", &[]), None);
        assert_eq!(
            environment_of("1", "payments-eu-prod-2"),
            Some("Production")
        );
        assert_eq!(category_value("web \"frontend\""), "Web Frontend");
        let (organization, _) = demo_datasets(today, 60);
        let teams: BTreeSet<&str> = organization
            .rows
            .iter()
            .filter_map(|r| r.cost_category("Team"))
            .collect();
        assert_eq!(teams.len(), 4);
    }

    #[tokio::test]
    async fn a_replayed_day_is_whole_and_published_as_the_clock_reads() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let at = |h: u32| day.and_hms_opt(h, 0, 0).unwrap().and_utc();
        let sim = demo_replay(
            day,
            DEMO_SCALE,
            Publications::default(),
            fixed_clock(at(11)),
        )
        .start()
        .await
        .unwrap();
        let base = sim.base_dataset("111111111111").unwrap();
        let (organization, _) = demo_datasets(day + Days::new(1), DEMO_SCALE);
        assert_eq!(*base, organization);
        let served = sim.dataset("111111111111").unwrap();
        assert_eq!(served.today, Some(day));
        assert_eq!(served.estimated_from, Some(day));
        assert_eq!(served.rows.last().map(|r| r.day), Some(day));
        // The replayed day at two fifths of its whole amounts, row by row.
        let units = |d: &Dataset| d.total_units(CostMetric::Unblended, |r| r.day == day);
        let expected: i128 = base
            .day_rows(day, day + Days::new(1))
            .iter()
            .map(|r| i128::from(r.amount(CostMetric::Unblended)) * 2 / 5)
            .sum();
        assert_eq!(units(&served), expected);
        sim.set_time(at(18));
        let later = sim.dataset("111111111111").unwrap();
        assert!(units(&later) > units(&served));
        // The workload account too.
        assert_eq!(sim.dataset("222222222222").unwrap().today, Some(day));
    }

    #[tokio::test]
    async fn the_simulator_listens_where_asked() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let sim = start_simulator_on(today, 5, &format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        assert_eq!(sim.endpoint(), format!("http://127.0.0.1:{port}"));
        assert_eq!(sim.dataset("111111111111").unwrap().accounts.len(), 6);
        assert!(
            start_simulator_on(today, 5, "not an address")
                .await
                .is_err()
        );
        let sim = start_simulator(today, DEMO_SCALE).await.unwrap();
        assert!(sim.addr().ip().is_loopback() && sim.addr().port() != 0);
    }
}
