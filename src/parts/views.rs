//! Views: cost grouped by one or two keys of any dimension, cost-allocation tag or cost
//! category, optionally filtered, month to date and on the data day (`views:`), as
//! `aws_cost_view_month_to_date_usd` and `aws_cost_view_daily_usd`.
//!
//! Each view costs what a tag key costs: one `MONTHLY` query over the month and one `DAILY`
//! query over the data day, grouped by its keys, under its filter, with all of its cost bases
//! at once, each paged to its end. Untagged or uncategorised cost has the empty value; the
//! largest `max_series` rows of each family are kept and the rest fold into one row whose every
//! key is `__other__`, so that a view's series always sum to its total. Every refresh; when it
//! fails, its last series stay.
//!
//! A view grouped by a cost category that has no value anywhere in the account (every row
//! uncategorised, as when the category does not exist) is served, and says so once in the log.

use std::collections::BTreeSet;

use super::{Cx, Encoding, Keys, Out, Part, PartError};
use crate::aggregate::Table;
use crate::cost_explorer::{Granularity, GroupKey, Query, tag_value};
use crate::exposition::FamilyDesc;
use crate::model::{
    DEFAULT_MAX_SERIES, FilterExpr, Integration, KeyKind, View, ViewKey, is_label_name,
};
use crate::schema::{
    ConfigError, Expander, NativeIntegration, RawExpression, RawGroup, RawValues, RawView, Text,
    positive,
};
use crate::snapshot::{Lines, OTHER, gauge};
use crate::storage::Fingerprint;
use serde_saphyr::{Location, Spanned};

pub const VIEW_DAILY: FamilyDesc = gauge(
    "aws_cost_view_daily_usd",
    "Cost in USD of the last complete UTC day by the keys of a configured view (empty: untagged or uncategorised; __other__: folded by max_series)",
    Some("usd"),
);
pub const VIEW_MONTH_TO_DATE: FamilyDesc = gauge(
    "aws_cost_view_month_to_date_usd",
    "Cost in USD of the current UTC month by the keys of a configured view (empty: untagged or uncategorised; __other__: folded by max_series)",
    Some("usd"),
);

/// The families of the views part.
pub const FAMILIES: [FamilyDesc; 2] = [VIEW_DAILY, VIEW_MONTH_TO_DATE];

/// The dimensions a view may group by, with the label their values are served under when the
/// entry names none. `LINKED_ACCOUNT` also gets `account_name`.
pub const GROUP_DIMENSIONS: [(&str, &str); 18] = [
    ("AZ", "availability_zone"),
    ("BILLING_ENTITY", "billing_entity"),
    ("DATABASE_ENGINE", "database_engine"),
    ("DEPLOYMENT_OPTION", "deployment_option"),
    ("INSTANCE_TYPE", "instance_type"),
    ("INSTANCE_TYPE_FAMILY", "instance_type_family"),
    ("INVOICING_ENTITY", "invoicing_entity"),
    ("LEGAL_ENTITY_NAME", "legal_entity_name"),
    ("LINKED_ACCOUNT", "account_id"),
    ("OPERATING_SYSTEM", "operating_system"),
    ("OPERATION", "operation"),
    ("PLATFORM", "platform"),
    ("PURCHASE_TYPE", "purchase_type"),
    ("RECORD_TYPE", "charge_type"),
    ("REGION", "region"),
    ("SERVICE", "aws_service"),
    ("TENANCY", "tenancy"),
    ("USAGE_TYPE", "usage_type"),
];

/// Labels every view series has, which a key's label must not take.
const RESERVED_LABELS: [&str; 4] = ["integration", "view", "cost_basis", "account_name"];

/// The `MatchOptions` GetCostAndUsage takes: "Valid values for MatchOptions for Dimensions
/// are EQUALS and CASE_SENSITIVE"; for CostCategories and Tags, EQUALS, ABSENT and
/// CASE_SENSITIVE (its API reference). Cost Explorer knows others (STARTS_WITH, CONTAINS, ...)
/// for other operations only.
fn match_options_for(kind: KeyKind) -> &'static [&'static str] {
    match kind {
        KeyKind::Dimension => &["EQUALS", "CASE_SENSITIVE"],
        KeyKind::Tag | KeyKind::CostCategory => &["EQUALS", "ABSENT", "CASE_SENSITIVE"],
    }
}

/// The views part.
pub struct Views;

/// One view's fetch: keyed by its keys' values (the second empty for a view of one key).
#[derive(Debug, Clone)]
pub struct ViewData {
    pub daily: Table<2>,
    pub month: Table<2>,
}

impl Part for Views {
    const NAME: &'static str = "views";
    const FAMILIES: &'static [FamilyDesc] = &FAMILIES;
    const COUNTED: &'static [FamilyDesc] = &FAMILIES;
    /// One per view, in configuration order.
    type Fetched = Vec<ViewData>;
    /// The views already reported as grouped by a cost category without any value.
    type Kept = BTreeSet<String>;

    fn enabled(integration: &Integration) -> bool {
        !integration.views.is_empty()
    }

    /// `views`.
    fn configure(
        raw: &NativeIntegration,
        keys: &Keys<'_>,
        into: &mut Integration,
    ) -> Result<(), ConfigError> {
        let Some(list) = &raw.views else {
            return Ok(());
        };
        let mut views: Vec<View> = Vec::with_capacity(list.value.len());
        for (i, raw_view) in list.value.iter().enumerate() {
            let at = format!("{}[{i}]", keys.key("views"));
            let view = view(&raw_view.value, &at, keys.x, into)?;
            if views.iter().any(|v| v.name == view.name) {
                return Err(ConfigError::new(
                    Some(format!("{at}.name")),
                    Some(raw_view.value.name.referenced),
                    format!("duplicate view name {:?}", view.name),
                ));
            }
            views.push(view);
        }
        into.views = views;
        Ok(())
    }

    /// The account, the data day, whether Organizations names the accounts, and every
    /// setting of every view.
    fn fingerprint(integration: &Integration, data_delay_days: u32, print: &mut Fingerprint) {
        super::print_rows(print, integration, data_delay_days);
        print.u64(integration.views.len() as u64);
        for view in &integration.views {
            print.str(&view.name);
            for key in &view.group_by {
                print.str(&format!("{:?}", key.kind));
                print.str(&key.key);
                print.str(&key.label);
            }
            print.str(
                &view
                    .filter
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            );
            super::print_bases(print, &view.cost_basis);
            print.u64(view.max_series as u64);
        }
    }

    /// Two queries per view: the month to date and the data day.
    async fn fetch(cx: &Cx<'_>, reported: &BTreeSet<String>) -> Result<Vec<ViewData>, PartError> {
        let ce = &cx.clients.cost_explorer;
        let month = (cx.period.month_start(), cx.period.query_end());
        let day = (cx.period.data_day, cx.period.data_day_end());
        let mut fetched = Vec::with_capacity(cx.integration.views.len());
        for view in &cx.integration.views {
            let group_by: Vec<GroupKey> = view
                .group_by
                .iter()
                .map(|key| GroupKey::of(key.kind, &key.key))
                .collect();
            let bases = view.cost_basis.len();
            let mut data = ViewData {
                daily: Table::new(bases),
                month: Table::new(bases),
            };
            for (granularity, range) in [(Granularity::Monthly, month), (Granularity::Daily, day)] {
                let table = match granularity {
                    Granularity::Monthly => &mut data.month,
                    Granularity::Daily => &mut data.daily,
                };
                let query = Query::cost(granularity, range, group_by.clone(), Vec::new())
                    .with_expression(view.filter.clone());
                ce.query_period(&query, &view.cost_basis, |keys, amounts| {
                    let value = |i: usize| {
                        let key = keys.get(i).copied().unwrap_or_default();
                        match view.group_by.get(i).map(|k| k.kind) {
                            Some(KeyKind::Tag | KeyKind::CostCategory) => tag_value(key),
                            _ => key,
                        }
                    };
                    table.add([value(0), value(1)], amounts);
                })
                .await
                .map_err(|err| PartError::new(&format!("view {:?}", view.name), &err))?;
            }
            if let Some(category) = uncategorised(view, &data)
                && !reported.contains(&view.name)
            {
                tracing::warn!(
                    integration = %cx.integration.name,
                    view = %view.name,
                    cost_category = %category,
                    "no cost has a value of this cost category (does it exist in the account?): the view serves it all as uncategorised"
                );
            }
            fetched.push(data);
        }
        Ok(fetched)
    }

    fn remember(cx: &Cx<'_>, fetched: &Vec<ViewData>, reported: &mut BTreeSet<String>) {
        for (view, data) in cx.integration.views.iter().zip(fetched) {
            if uncategorised(view, data).is_some() {
                reported.insert(view.name.clone());
            }
        }
    }

    fn encode(
        cx: &Encoding<'_>,
        fetched: Option<&Vec<ViewData>>,
        _reported: &BTreeSet<String>,
        out: &mut Out<'_>,
    ) {
        let Some(fetched) = fetched else {
            return out.keep();
        };
        let integration = cx.integration;
        for family in FAMILIES {
            let mut lines = Lines::new(&family, cx.identity);
            let mut dropped = 0;
            for (view, data) in integration.views.iter().zip(fetched) {
                let table = match family.name {
                    name if name == VIEW_DAILY.name => &data.daily,
                    _ => &data.month,
                };
                let keys: Vec<usize> = (0..view.group_by.len()).collect();
                let (table, folded) = table.fold(view.max_series, &keys, OTHER);
                dropped += folded * view.cost_basis.len();
                let mut labels: Vec<(&str, &str)> = Vec::with_capacity(4);
                for row in table.sorted() {
                    let values = table.key(row);
                    labels.clear();
                    labels.push(("view", view.name.as_str()));
                    for (key, value) in view.group_by.iter().zip(values) {
                        labels.push((key.label.as_str(), value));
                        if key.is_account() {
                            let name = match value {
                                OTHER => OTHER,
                                id => cx.shared.names.of(id),
                            };
                            labels.push(("account_name", name));
                        }
                    }
                    lines.samples_by_basis(&labels, &view.cost_basis, table.amounts(row));
                }
            }
            out.set(&family, lines.block(dropped));
        }
    }
}

/// The cost category a view groups by, when no row of it has a value (and there are rows).
fn uncategorised<'v>(view: &'v View, data: &ViewData) -> Option<&'v str> {
    let position = view
        .group_by
        .iter()
        .position(|key| key.kind == KeyKind::CostCategory)?;
    let tables = [&data.month, &data.daily];
    let rows = tables.iter().any(|table| !table.is_empty());
    let none = tables
        .iter()
        .all(|table| table.iter().all(|(key, _)| key[position].is_empty()));
    (rows && none).then(|| view.group_by[position].key.as_str())
}

/// `[a-z_][a-z0-9_]*`.
fn is_view_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `prefix` and `name`, lower-cased, every character a label name cannot have as `_`.
fn sanitised(prefix: &str, name: &str) -> String {
    let mut label = String::from(prefix);
    label.extend(name.chars().map(|c| match c {
        c if c.is_ascii_alphanumeric() => c.to_ascii_lowercase(),
        _ => '_',
    }));
    label
}

fn error(key: String, at: Location, message: impl Into<String>) -> ConfigError {
    ConfigError::new(Some(key), Some(at), message)
}

/// Validates one view.
fn view(
    raw: &RawView,
    at: &str,
    x: &Expander<'_>,
    integration: &Integration,
) -> Result<View, ConfigError> {
    let key = |field: &str| format!("{at}.{field}");
    let name = x.non_empty(&key("name"), &raw.name)?;
    if !is_view_name(&name) {
        return Err(error(
            key("name"),
            raw.name.referenced,
            format!(
                "{name:?} is not a view name: lower-case letters, digits and _, not starting with a digit"
            ),
        ));
    }
    let groups = &raw.group_by;
    if !(1..=2).contains(&groups.value.len()) {
        return Err(error(
            key("group_by"),
            groups.referenced,
            format!(
                "lists {} keys; a view groups by one or two (Cost Explorer groups by at most two)",
                groups.value.len()
            ),
        ));
    }
    let mut group_by: Vec<ViewKey> = Vec::with_capacity(2);
    for (i, entry) in groups.value.iter().enumerate() {
        let at = format!("{}[{i}]", key("group_by"));
        let group = group(&entry.value, &at, entry.referenced, x)?;
        let label_at = entry
            .value
            .label
            .as_ref()
            .map_or(entry.referenced, |l| l.referenced);
        if RESERVED_LABELS.contains(&group.label.as_str())
            || (group.label == "account_name" && group.is_account())
        {
            return Err(error(
                format!("{at}.label"),
                label_at,
                format!(
                    "{:?} is a label every view series has ({}); choose another",
                    group.label,
                    RESERVED_LABELS.join(", ")
                ),
            ));
        }
        if integration
            .labels
            .iter()
            .any(|(name, _)| *name == group.label)
        {
            return Err(error(
                format!("{at}.label"),
                label_at,
                format!(
                    "{:?} is a static label of the integration (labels); choose another",
                    group.label
                ),
            ));
        }
        if group_by.iter().any(|g| g.label == group.label) {
            return Err(error(
                format!("{at}.label"),
                label_at,
                format!(
                    "both keys would be served as label {:?}; give one a label of its own",
                    group.label
                ),
            ));
        }
        group_by.push(group);
    }
    let filter = raw
        .filter
        .as_ref()
        .map(|filter| expression(&filter.value, &key("filter"), filter.referenced, x))
        .transpose()?;
    let cost_basis = match &raw.cost_basis {
        Some(list) => x.cost_bases(&key("cost_basis"), list)?,
        None => integration.cost_basis.clone(),
    };
    let max_series = positive(&key("max_series"), &raw.max_series, DEFAULT_MAX_SERIES)?;
    Ok(View {
        name,
        group_by,
        filter,
        cost_basis,
        max_series,
    })
}

/// Validates one `group_by` entry: exactly one kind, a known dimension, a label name.
fn group(
    raw: &RawGroup,
    at: &str,
    location: Location,
    x: &Expander<'_>,
) -> Result<ViewKey, ConfigError> {
    let kinds: Vec<(KeyKind, &Text)> = [
        (KeyKind::Dimension, &raw.dimension),
        (KeyKind::Tag, &raw.tag),
        (KeyKind::CostCategory, &raw.cost_category),
    ]
    .into_iter()
    .filter_map(|(kind, value)| value.as_ref().map(|v| (kind, v)))
    .collect();
    let [(kind, value)] = kinds[..] else {
        return Err(error(
            at.to_string(),
            location,
            format!(
                "gives {} of dimension, tag and cost_category; give exactly one",
                kinds.len()
            ),
        ));
    };
    let field = match kind {
        KeyKind::Dimension => "dimension",
        KeyKind::Tag => "tag",
        KeyKind::CostCategory => "cost_category",
    };
    let name = x.non_empty(&format!("{at}.{field}"), value)?;
    let default = match kind {
        KeyKind::Dimension => GROUP_DIMENSIONS
            .iter()
            .find(|(dimension, _)| *dimension == name)
            .map(|(_, label)| label.to_string())
            .ok_or_else(|| {
                error(
                    format!("{at}.dimension"),
                    value.referenced,
                    format!(
                        "{name:?} is not a dimension Cost Explorer groups by; expected one of {}",
                        GROUP_DIMENSIONS.map(|(d, _)| d).join(", ")
                    ),
                )
            })?,
        KeyKind::Tag => sanitised("tag_", &name),
        KeyKind::CostCategory => sanitised("cost_category_", &name),
    };
    let label = match &raw.label {
        None => default,
        Some(text) => {
            let label = x.non_empty(&format!("{at}.label"), text)?;
            if !is_label_name(&label) {
                return Err(error(
                    format!("{at}.label"),
                    text.referenced,
                    format!(
                        "{label:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
                    ),
                ));
            }
            label
        }
    };
    Ok(ViewKey {
        kind,
        key: name,
        label,
    })
}

/// Validates a filter `Expression`: exactly one root per node, `And`/`Or` of two or more,
/// known dimensions and match options, values where Cost Explorer requires them.
fn expression(
    raw: &RawExpression,
    at: &str,
    location: Location,
    x: &Expander<'_>,
) -> Result<FilterExpr, ConfigError> {
    let roots = [
        raw.and.is_some(),
        raw.or.is_some(),
        raw.not.is_some(),
        raw.dimensions.is_some(),
        raw.tags.is_some(),
        raw.cost_categories.is_some(),
    ]
    .into_iter()
    .filter(|present| *present)
    .count();
    let wrong_roots = || {
        error(
            at.to_string(),
            location,
            format!(
                "has {roots} roots; an expression has exactly one of And, Or, Not, Dimensions, Tags, CostCategories"
            ),
        )
    };
    if roots != 1 {
        return Err(wrong_roots());
    }
    let operands = |list: &Spanned<Vec<Spanned<RawExpression>>>,
                    name: &str|
     -> Result<Vec<FilterExpr>, ConfigError> {
        if list.value.len() < 2 {
            return Err(error(
                format!("{at}.{name}"),
                list.referenced,
                format!(
                    "has {} operand(s); {name} takes two or more (use the operand itself for one)",
                    list.value.len()
                ),
            ));
        }
        list.value
            .iter()
            .enumerate()
            .map(|(i, item)| {
                expression(
                    &item.value,
                    &format!("{at}.{name}[{i}]"),
                    item.referenced,
                    x,
                )
            })
            .collect()
    };
    if let Some(list) = &raw.and {
        return Ok(FilterExpr::And(operands(list, "And")?));
    }
    if let Some(list) = &raw.or {
        return Ok(FilterExpr::Or(operands(list, "Or")?));
    }
    if let Some(inner) = &raw.not {
        let inner = expression(&inner.value, &format!("{at}.Not"), inner.referenced, x)?;
        return Ok(FilterExpr::Not(Box::new(inner)));
    }
    let (kind, name, values) = if let Some(values) = &raw.dimensions {
        (KeyKind::Dimension, "Dimensions", values)
    } else if let Some(values) = &raw.tags {
        (KeyKind::Tag, "Tags", values)
    } else if let Some(values) = &raw.cost_categories {
        (KeyKind::CostCategory, "CostCategories", values)
    } else {
        return Err(wrong_roots());
    };
    values_of(
        kind,
        &values.value,
        &format!("{at}.{name}"),
        values.referenced,
        x,
    )
}

/// Validates the `Dimensions`, `Tags` or `CostCategories` of a filter.
fn values_of(
    kind: KeyKind,
    raw: &RawValues,
    at: &str,
    location: Location,
    x: &Expander<'_>,
) -> Result<FilterExpr, ConfigError> {
    let key = x.non_empty(&format!("{at}.Key"), &raw.key)?;
    if kind == KeyKind::Dimension
        && !aws_sdk_costexplorer::types::Dimension::values().contains(&key.as_str())
    {
        return Err(error(
            format!("{at}.Key"),
            raw.key.referenced,
            format!(
                "{key:?} is not a Cost Explorer dimension; expected one of {}",
                aws_sdk_costexplorer::types::Dimension::values().join(", ")
            ),
        ));
    }
    let mut match_options = Vec::new();
    for (i, option) in raw.match_options.iter().flatten().enumerate() {
        let option_key = format!("{at}.MatchOptions[{i}]");
        let text = x.non_empty(&option_key, option)?;
        let allowed = match_options_for(kind);
        if !allowed.contains(&text.as_str()) {
            return Err(error(
                option_key,
                option.referenced,
                format!(
                    "{text:?} is not a match option GetCostAndUsage takes here; expected one of {}",
                    allowed.join(", ")
                ),
            ));
        }
        match_options.push(text);
    }
    let mut values = Vec::new();
    for (i, value) in raw.values.iter().flatten().enumerate() {
        values.push(x.text(&format!("{at}.Values[{i}]"), value)?);
    }
    let absent = match_options.iter().any(|o| o == "ABSENT");
    if values.is_empty() && !absent {
        return Err(error(
            format!("{at}.Values"),
            location,
            "needs at least one value (only MatchOptions: [ABSENT] takes none)",
        ));
    }
    if !values.is_empty() && absent {
        return Err(error(
            format!("{at}.Values"),
            location,
            "is given with MatchOptions: [ABSENT], which matches cost without the key: give no Values",
        ));
    }
    Ok(FilterExpr::Values {
        kind,
        key,
        values,
        match_options,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, parse_with_env};
    use crate::model::{CostBasis, FilterExpr, KeyKind, View, ViewKey};

    fn config(views: &str) -> String {
        format!(
            "integrations:\n  - name: payer\n    account_id: \"111111111111\"\n    cost_basis: [unblended, amortized]\n    views:\n{views}"
        )
    }

    fn views(views: &str) -> Vec<View> {
        let config = parse_with_env(&config(views), &|_| None).unwrap();
        config.integrations[0].views.clone()
    }

    fn err(views: &str) -> ConfigError {
        match parse_with_env(&config(views), &|_| None) {
            Ok(config) => panic!("accepted: {:?}", config.integrations[0].views),
            Err(err) => err,
        }
    }

    fn key(kind: KeyKind, key: &str, label: &str) -> ViewKey {
        ViewKey {
            kind,
            key: key.into(),
            label: label.into(),
        }
    }

    #[test]
    fn a_view_reads_as_the_issue_spells_it() {
        let got = views(
            "      - name: team_by_region
        group_by:
          - cost_category: Team
            label: team
          - dimension: REGION
        filter:
          Not: {Dimensions: {Key: RECORD_TYPE, Values: [Credit, Refund]}}
        cost_basis: [unblended]
        max_series: 50
      - name: by_tag
        group_by:
          - tag: \"Cost Center\"
          - cost_category: Env-Name
      - name: accounts
        group_by: [{dimension: LINKED_ACCOUNT}, {dimension: SERVICE}]
        filter:
          And:
            - Tags: {Key: env, Values: [prod]}
            - Or:
                - CostCategories: {Key: Team, MatchOptions: [ABSENT]}
                - Dimensions: {Key: USAGE_TYPE, Values: [EU-BoxUsage], MatchOptions: [CASE_SENSITIVE]}
",
        );
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].name, "team_by_region");
        assert_eq!(
            got[0].group_by,
            vec![
                key(KeyKind::CostCategory, "Team", "team"),
                key(KeyKind::Dimension, "REGION", "region")
            ]
        );
        assert_eq!(
            got[0].filter,
            Some(FilterExpr::Not(Box::new(FilterExpr::Values {
                kind: KeyKind::Dimension,
                key: "RECORD_TYPE".into(),
                values: vec!["Credit".into(), "Refund".into()],
                match_options: vec![],
            })))
        );
        assert_eq!(
            (got[0].cost_basis.clone(), got[0].max_series),
            (vec![CostBasis::Unblended], 50)
        );
        // Defaults: sanitised tag and cost category labels, the integration's bases, 500.
        assert_eq!(
            got[1].group_by,
            vec![
                key(KeyKind::Tag, "Cost Center", "tag_cost_center"),
                key(KeyKind::CostCategory, "Env-Name", "cost_category_env_name")
            ]
        );
        assert_eq!(
            (
                got[1].cost_basis.clone(),
                got[1].max_series,
                got[1].filter.clone()
            ),
            (vec![CostBasis::Unblended, CostBasis::Amortized], 500, None)
        );
        assert_eq!(
            got[2].group_by,
            vec![
                key(KeyKind::Dimension, "LINKED_ACCOUNT", "account_id"),
                key(KeyKind::Dimension, "SERVICE", "aws_service")
            ]
        );
        assert_eq!(
            got[2].filter.as_ref().map(ToString::to_string).as_deref(),
            Some(
                "And(tag env in [\"prod\"], Or(cost category Team in [] ABSENT, USAGE_TYPE in [\"EU-BoxUsage\"] CASE_SENSITIVE))"
            )
        );
    }

    /// Each mistake the issue lists: its key, line and column, and what is wrong.
    #[test]
    fn bad_views_are_refused_at_their_key() {
        let cases: &[(&str, &str, (u64, u64), &str)] = &[
            (
                "      - name: v\n        group_by: [{dimension: REGION}, {dimension: AZ}, {tag: team}]\n",
                "integrations[0].views[0].group_by",
                (7, 19),
                "lists 3 keys; a view groups by one or two",
            ),
            (
                "      - name: v\n        group_by: []\n",
                "integrations[0].views[0].group_by",
                (7, 19),
                "lists 0 keys",
            ),
            (
                "      - name: v\n        group_by:\n          - dimension: REGION\n            tag: team\n",
                "integrations[0].views[0].group_by[0]",
                (8, 13),
                "gives 2 of dimension, tag and cost_category; give exactly one",
            ),
            (
                "      - name: v\n        group_by:\n          - label: x\n",
                "integrations[0].views[0].group_by[0]",
                (8, 13),
                "gives 0 of dimension, tag and cost_category",
            ),
            (
                "      - name: v\n        group_by:\n          - dimension: REGIONS\n",
                "integrations[0].views[0].group_by[0].dimension",
                (8, 24),
                "\"REGIONS\" is not a dimension Cost Explorer groups by",
            ),
            (
                "      - name: v\n        group_by:\n          - dimension: REGION\n          - tag: region\n            label: region\n",
                "integrations[0].views[0].group_by[1].label",
                (10, 20),
                "both keys would be served as label \"region\"",
            ),
            (
                "      - name: v\n        group_by:\n          - dimension: REGION\n            label: integration\n",
                "integrations[0].views[0].group_by[0].label",
                (9, 20),
                "\"integration\" is a label every view series has",
            ),
            (
                "      - name: v\n        group_by:\n          - dimension: REGION\n            label: cost_basis\n",
                "integrations[0].views[0].group_by[0].label",
                (9, 20),
                "\"cost_basis\" is a label every view series has",
            ),
            (
                "      - name: v\n        group_by:\n          - tag: x\n            label: \"9lives\"\n",
                "integrations[0].views[0].group_by[0].label",
                (9, 20),
                "is not a Prometheus label name",
            ),
            (
                "      - name: v\n        group_by: [{dimension: REGION}]\n        filter: {}\n",
                "integrations[0].views[0].filter",
                (8, 17),
                "has 0 roots; an expression has exactly one of",
            ),
            (
                "      - name: v\n        group_by: [{dimension: REGION}]\n        filter:\n          Tags: {Key: a, Values: [b]}\n          Dimensions: {Key: REGION, Values: [x]}\n",
                "integrations[0].views[0].filter",
                (9, 11),
                "has 2 roots",
            ),
            (
                "      - name: v\n        group_by: [{dimension: REGION}]\n        filter:\n          And:\n            - Tags: {Key: a, Values: [b]}\n",
                "integrations[0].views[0].filter.And",
                (10, 13),
                "has 1 operand(s); And takes two or more",
            ),
            (
                "      - name: v\n        group_by: [{dimension: REGION}]\n        filter:\n          Or: []\n",
                "integrations[0].views[0].filter.Or",
                (9, 15),
                "has 0 operand(s); Or takes two or more",
            ),
            (
                "      - name: v\n        group_by: [{dimension: REGION}]\n        filter:\n          Tags: {Key: a, Values: [b], MatchOptions: [EQUAL]}\n",
                "integrations[0].views[0].filter.Tags.MatchOptions[0]",
                (9, 54),
                "\"EQUAL\" is not a match option GetCostAndUsage takes here",
            ),
            (
                "      - name: v\n        group_by: [{dimension: REGION}]\n        filter:\n          Not: {Tags: {Key: a}}\n",
                "integrations[0].views[0].filter.Not.Tags.Values",
                (9, 23),
                "needs at least one value",
            ),
            (
                "      - name: v\n        group_by: [{dimension: REGION}]\n        filter:\n          Dimensions: {Key: REGION, Values: [], MatchOptions: [ABSENT]}\n",
                "integrations[0].views[0].filter.Dimensions.MatchOptions[0]",
                (9, 64),
                "\"ABSENT\" is not a match option GetCostAndUsage takes here; expected one of EQUALS, CASE_SENSITIVE",
            ),
            (
                "      - name: v\n        group_by: [{dimension: REGION}]\n        filter:\n          Tags: {Key: a, Values: [b], MatchOptions: [CONTAINS]}\n",
                "integrations[0].views[0].filter.Tags.MatchOptions[0]",
                (9, 54),
                "\"CONTAINS\" is not a match option GetCostAndUsage takes here; expected one of EQUALS, ABSENT, CASE_SENSITIVE",
            ),
            (
                "      - name: v\n        group_by: [{dimension: REGION}]\n        filter:\n          CostCategories: {Key: Team, Values: [Data], MatchOptions: [ABSENT]}\n",
                "integrations[0].views[0].filter.CostCategories.Values",
                (9, 27),
                "is given with MatchOptions: [ABSENT]",
            ),
            (
                "      - name: v\n        group_by: [{dimension: REGION}]\n        filter:\n          Dimensions: {Key: COUNTRY, Values: [x]}\n",
                "integrations[0].views[0].filter.Dimensions.Key",
                (9, 29),
                "\"COUNTRY\" is not a Cost Explorer dimension",
            ),
            (
                "      - name: Team\n        group_by: [{dimension: REGION}]\n",
                "integrations[0].views[0].name",
                (6, 15),
                "\"Team\" is not a view name",
            ),
            (
                "      - name: v\n        group_by: [{dimension: REGION}]\n      - name: v\n        group_by: [{dimension: AZ}]\n",
                "integrations[0].views[1].name",
                (8, 15),
                "duplicate view name \"v\"",
            ),
            (
                "      - name: v\n        group_by: [{dimension: REGION}]\n        cost_basis: []\n",
                "integrations[0].views[0].cost_basis",
                (8, 21),
                "must name at least one cost basis",
            ),
            (
                "      - name: v\n        group_by: [{dimension: REGION}]\n        max_series: 0\n",
                "integrations[0].views[0].max_series",
                (8, 21),
                "must be at least 1",
            ),
            (
                "      - name: v\n        group_by: [{dimension: REGION}]\n        colour: red\n",
                "integrations[0].views[0].colour",
                (8, 9),
                "unknown field `colour`",
            ),
        ];
        for (views, key, position, message) in cases {
            let e = err(views);
            assert_eq!(e.key.as_deref(), Some(*key), "{views}: {e}");
            assert_eq!(e.position, Some(*position), "{views}: {e}");
            assert!(e.message.contains(message), "{views}: {e}");
        }
    }
}
