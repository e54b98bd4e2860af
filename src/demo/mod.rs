//! The demo: a simulated Cost Explorer and STS with realistic data, and the configuration that
//! points the exporter at it through the real SDK code path (endpoint override). Used by
//! `--demo` and by the tests.

pub mod dataset;
pub mod simulator;

use chrono::NaiveDate;

pub use dataset::{Dataset, DatasetSpec};
pub use simulator::{Behavior, LoggedRequest, Simulator, SimulatorBuilder};

use crate::config::{self, Config, ConfigError};

/// The demo configuration, with `${AWS_COST_EXPORTER_DEMO_ENDPOINT}` for the simulator.
pub const DEMO_CONFIG: &str = include_str!("../../examples/demo.yaml");

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

/// Groups per page in the demo, small enough that every refresh pages.
pub const DEMO_PAGE_SIZE: usize = 200;

/// The demo configuration pointed at `endpoint`.
pub fn demo_config(endpoint: &str) -> Result<Config, ConfigError> {
    config::parse_with_env(DEMO_CONFIG, &|name| {
        (name == "AWS_COST_EXPORTER_DEMO_ENDPOINT").then(|| endpoint.to_string())
    })
}

/// Starts the demo's simulated AWS, with data up to `today`.
pub async fn start_simulator(today: NaiveDate) -> std::io::Result<Simulator> {
    let organization = Dataset::generate(&DatasetSpec {
        seed: 20_261_123,
        accounts: DEMO_ORGANIZATION,
        today,
        history_days: 62,
        estimated_days: 2,
        scale: 1.0,
        idle_accounts: DEMO_IDLE_MEMBERS,
    });
    let workload = Dataset::generate(&DatasetSpec {
        seed: 42,
        accounts: DEMO_WORKLOAD,
        today,
        history_days: 62,
        estimated_days: 2,
        scale: 0.15,
        idle_accounts: &[],
    });
    Simulator::builder()
        .account("111111111111", organization)
        .account("222222222222", workload)
        .access_key(
            "AKIADEMOPAYER0000001",
            "demo-payer-secret-not-real",
            "111111111111",
        )
        // The security account's identity has no Cost Explorer access of its own.
        .access_key(
            "AKIADEMOSECURITY0001",
            "demo-security-secret-not-real",
            "999999999999",
        )
        .role("222222222222", "CostExporter", Some("demo-external-id"))
        .resource_level_data("111111111111")
        .page_size(DEMO_PAGE_SIZE)
        .start()
        .await
}
