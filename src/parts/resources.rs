//! Resources: the data day's cost by resource of each configured service, with
//! GetCostAndUsageWithResources (opt-in per account at daily granularity, last 14 days only).
//! Every refresh; only services that had cost on the data day are asked, split like the cost
//! queries on the smaller of their accounts and charge types, so it needs the refresh's cost
//! rows. The largest `max_resource_series` per cost basis are kept, the rest fold into
//! `resource_id="__other__"`.

use std::collections::BTreeSet;

use chrono::{Days, NaiveDate};

use super::costs::plan_split;
use super::{Cx, Encoding, Keys, Out, Part, PartError};
use crate::aggregate::Table;
use crate::cost_explorer::{
    CostExplorer, CostExplorerError, Dimension, Granularity, GroupKey, Operation, Query,
};
use crate::exposition::FamilyDesc;
use crate::failure::{Concise, Reason};
use crate::model::{CostBasis, Integration};
use crate::schema::{ConfigError, NativeIntegration};
use crate::snapshot::{OTHER, gauge, table_block};
use crate::storage::Fingerprint;

/// How far back AWS serves resource-level data.
pub const RESOURCE_DAYS: u64 = 14;

pub const RESOURCE_DAILY: FamilyDesc = gauge(
    "aws_cost_resource_daily_usd",
    "Cost in USD of the last complete UTC day by resource; the smallest are folded into resource_id=\"__other__\"",
    Some("usd"),
);

/// The families of the resources part.
pub const FAMILIES: [FamilyDesc; 1] = [RESOURCE_DAILY];

/// The resources part.
pub struct Resources;

impl Part for Resources {
    const NAME: &'static str = "resources";
    const FAMILIES: &'static [FamilyDesc] = &FAMILIES;
    const COUNTED: &'static [FamilyDesc] = &FAMILIES;
    const NEEDS_COST_ROWS: bool = true;
    /// The data day's cost keyed (account, service, resource, record type).
    type Fetched = Table<4>;
    type Kept = ();

    fn enabled(integration: &Integration) -> bool {
        !integration.resources.is_empty()
    }

    /// `resources` (no further back than AWS serves them) and `max_resource_series`.
    fn configure(
        raw: &NativeIntegration,
        keys: &Keys<'_>,
        into: &mut Integration,
    ) -> Result<(), ConfigError> {
        (into.resources, into.max_resource_series) = keys.capped_list(
            ("resources", &raw.resources),
            ("max_resource_series", &raw.max_resource_series),
        )?;
        if !into.resources.is_empty() && u64::from(keys.data_delay_days) >= RESOURCE_DAYS {
            return Err(ConfigError::new(
                Some(keys.key("resources")),
                raw.resources.as_ref().map(|r| r.referenced),
                format!(
                    "resource-level data covers only the last {RESOURCE_DAYS} days, but data_delay_days is {}",
                    keys.data_delay_days
                ),
            ));
        }
        Ok(())
    }

    fn fingerprint(integration: &Integration, data_delay_days: u32, print: &mut Fingerprint) {
        super::print_rows(print, integration, data_delay_days);
        print.strs(&integration.resources);
        print.u64(integration.max_resource_series as u64);
    }

    /// The data day's resource-level costs of each configured service that had cost that day.
    async fn fetch(cx: &Cx<'_>, _kept: &()) -> Result<Table<4>, PartError> {
        let period = cx.period;
        if period.data_day + Days::new(RESOURCE_DAYS) <= period.today {
            return Err(PartError {
                reason: Reason::AwsError,
                text: Concise::default().elidable(format!(
                    "resource-level costs: AWS serves only the last {RESOURCE_DAYS} days; lower data_delay_days"
                )),
            });
        }
        let costs = cx.rows(Self::NAME)?;
        let bases = &cx.integration.cost_basis;
        let mut rows = Table::new(bases.len());
        for service in &cx.integration.resources {
            let mut accounts = BTreeSet::new();
            let mut record_types = BTreeSet::new();
            for (key, _) in costs.daily.iter().filter(|(key, _)| key[1] == service) {
                accounts.insert(key[0].to_string());
                record_types.insert(key[2].to_string());
            }
            if accounts.is_empty() {
                continue;
            }
            cx.clients
                .cost_explorer
                .resource_costs(period.data_day, service, &accounts, &record_types, bases, &mut rows)
                .await
                .map_err(|err| {
                    let mut part = PartError::new(&format!("resources of {service:?}"), &err);
                    if matches!(&err, CostExplorerError::Api(aws) if aws.code() == Some("ValidationException")) {
                        // What the operator has to do, briefly.
                        part.text = part.text.elidable(
                            "; enable 'Resource-level data at daily granularity' for it in the management account's Cost Management preferences",
                        );
                    }
                    part
                })?;
        }
        Ok(rows)
    }

    fn encode(cx: &Encoding<'_>, rows: Option<&Table<4>>, _kept: &(), out: &mut Out<'_>) {
        let Some(rows) = rows else {
            return out.keep();
        };
        let integration = cx.integration;
        let (table, dropped) = rows.fold(integration.max_resource_series, &[2], OTHER);
        let labels = ["account_id", "aws_service", "resource_id", "charge_type"];
        out.set(
            &RESOURCE_DAILY,
            table_block(
                &RESOURCE_DAILY,
                (cx.identity, &integration.cost_basis),
                &table,
                labels,
                &cx.shared.names,
                dropped,
            ),
        );
    }
}

impl CostExplorer {
    /// One day's cost by resource for one service, with GetCostAndUsageWithResources, added to
    /// `into` keyed (account id, service, resource id, record type). `accounts` and
    /// `record_types` are those the service had that day: the query splits on the smaller set,
    /// as [`CostExplorer::costs`] does.
    pub async fn resource_costs(
        &self,
        day: NaiveDate,
        service: &str,
        accounts: &BTreeSet<String>,
        record_types: &BTreeSet<String>,
        bases: &[CostBasis],
        into: &mut Table<4>,
    ) -> Result<(), CostExplorerError> {
        let plan = plan_split(accounts, record_types);
        let other = match plan.split {
            Dimension::LinkedAccount => Dimension::RecordType,
            _ => Dimension::LinkedAccount,
        };
        let end = day.succ_opt().unwrap_or(day);
        for value in &plan.values {
            let query = Query {
                operation: Operation::WithResources,
                granularity: Granularity::Daily,
                start: day,
                end,
                group_by: vec![GroupKey::ResourceId, GroupKey::Dimension(other)],
                filter: vec![
                    (Dimension::Service, vec![service.to_string()]),
                    (plan.split, vec![value.clone()]),
                ],
                expression: None,
            };
            self.query_period(&query, bases, |keys, amounts| {
                let (account, record_type) = match plan.split {
                    Dimension::LinkedAccount => (value.as_str(), keys[1]),
                    _ => (keys[1], value.as_str()),
                };
                into.add([account, service, keys[0], record_type], amounts);
            })
            .await?;
        }
        Ok(())
    }
}
