//! Tags: cost by account and value of each configured cost-allocation tag key, month to date
//! and on the data day. Every refresh, two queries per key (grouped by account and tag); the
//! largest `max_tag_series` per family and cost basis are kept, the rest fold into
//! `tag_value="__other__"`. Untagged cost has an empty value.

use super::{Cx, Encoding, Keys, Out, Part, PartError};
use crate::aggregate::Table;
use crate::cost_explorer::{
    CostExplorer, CostExplorerError, Dimension, Granularity, GroupKey, Period, Query, tag_value,
};
use crate::exposition::FamilyDesc;
use crate::model::{CostBasis, Integration};
use crate::schema::{ConfigError, NativeIntegration};
use crate::snapshot::{OTHER, gauge, table_block};
use crate::storage::Fingerprint;

pub const TAG_DAILY: FamilyDesc = gauge(
    "aws_cost_tag_daily_usd",
    "Cost in USD of the last complete UTC day by account and cost-allocation tag value (empty: untagged)",
    Some("usd"),
);
pub const TAG_MONTH_TO_DATE: FamilyDesc = gauge(
    "aws_cost_tag_month_to_date_usd",
    "Cost in USD of the current UTC month by account and cost-allocation tag value (empty: untagged)",
    Some("usd"),
);

/// The families of the tags part.
pub const FAMILIES: [FamilyDesc; 2] = [TAG_DAILY, TAG_MONTH_TO_DATE];

/// The tags part.
pub struct Tags;

/// Month-to-date and data-day cost of cost-allocation tag keys by account and tag value.
#[derive(Debug, Clone)]
pub struct TagData {
    /// Keyed (account id, tag key, tag value); untagged cost has an empty value.
    pub daily: Table<3>,
    pub month: Table<3>,
}

impl Part for Tags {
    const NAME: &'static str = "tags";
    const FAMILIES: &'static [FamilyDesc] = &FAMILIES;
    const COUNTED: &'static [FamilyDesc] = &FAMILIES;
    type Fetched = TagData;
    type Kept = ();

    fn enabled(integration: &Integration) -> bool {
        !integration.tags.is_empty()
    }

    /// `tags` and `max_tag_series`.
    fn configure(
        raw: &NativeIntegration,
        keys: &Keys<'_>,
        into: &mut Integration,
    ) -> Result<(), ConfigError> {
        (into.tags, into.max_tag_series) =
            keys.capped_list(("tags", &raw.tags), ("max_tag_series", &raw.max_tag_series))?;
        Ok(())
    }

    fn fingerprint(integration: &Integration, data_delay_days: u32, print: &mut Fingerprint) {
        super::print_rows(print, integration, data_delay_days);
        print.strs(&integration.tags);
        print.u64(integration.max_tag_series as u64);
    }

    /// Two queries per tag key: the month to date and the data day.
    async fn fetch(cx: &Cx<'_>, _kept: &()) -> Result<TagData, PartError> {
        let bases = &cx.integration.cost_basis;
        let mut tags = TagData {
            daily: Table::new(bases.len()),
            month: Table::new(bases.len()),
        };
        for key in &cx.integration.tags {
            cx.clients
                .cost_explorer
                .tag_costs(cx.period, bases, key, &mut tags)
                .await
                .map_err(|err| PartError::new(&format!("tag {key:?}"), &err))?;
        }
        Ok(tags)
    }

    fn encode(cx: &Encoding<'_>, tags: Option<&TagData>, _kept: &(), out: &mut Out<'_>) {
        let Some(tags) = tags else {
            return out.keep();
        };
        let integration = cx.integration;
        let labels = ["account_id", "tag_key", "tag_value"];
        for (family, table) in [(TAG_DAILY, &tags.daily), (TAG_MONTH_TO_DATE, &tags.month)] {
            let (table, dropped) = table.fold(integration.max_tag_series, &[2], OTHER);
            out.set(
                &family,
                table_block(
                    &family,
                    (cx.identity, &integration.cost_basis),
                    &table,
                    labels,
                    &cx.shared.names,
                    dropped,
                ),
            );
        }
    }
}

impl CostExplorer {
    /// Month-to-date and data-day cost by account and value of one cost-allocation tag key,
    /// added to `into` (untagged cost has an empty value).
    pub async fn tag_costs(
        &self,
        period: Period,
        bases: &[CostBasis],
        tag_key: &str,
        into: &mut TagData,
    ) -> Result<(), CostExplorerError> {
        let group_by = vec![
            GroupKey::Dimension(Dimension::LinkedAccount),
            GroupKey::Tag(tag_key.to_string()),
        ];
        let month = (period.month_start(), period.query_end());
        let day = (period.data_day, period.data_day_end());
        for (granularity, range) in [(Granularity::Monthly, month), (Granularity::Daily, day)] {
            let table = match granularity {
                Granularity::Monthly => &mut into.month,
                Granularity::Daily => &mut into.daily,
            };
            let query = Query::cost(granularity, range, group_by.clone(), Vec::new());
            self.query_period(&query, bases, |keys, amounts| {
                table.add([keys[0], tag_key, tag_value(keys[1])], amounts);
            })
            .await?;
        }
        Ok(())
    }
}
