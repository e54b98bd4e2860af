//! Forecast: AWS's forecast for the whole current UTC month (month to date plus GetCostForecast
//! for the rest), with its 80 % prediction interval, per cost basis; and each budget's forecast
//! (a filtered budget's with its own filter). Every refresh; nothing is asked on the last day
//! of a month, when the forecast is the month to date.
//!
//! It keeps the forecasts of the rest of the month: when it fails, or does not run, the last
//! ones are added to the current month to date.

use std::collections::BTreeMap;

use aws_sdk_costexplorer::types::{ForecastResult, Granularity as SdkGranularity, Metric};
use chrono::NaiveDate;

use super::{Cx, Encoding, Keys, Out, Part, PartError};
use crate::cost_explorer::{
    CostExplorer, CostExplorerError, Dimension, api_error, date_interval, filter_expression,
    parse_amount, parse_number,
};
use crate::exposition::FamilyDesc;
use crate::model::{CostBasis, Integration};
use crate::schema::{ConfigError, NativeIntegration};
use crate::snapshot::{Lines, gauge};
use crate::storage::{Fingerprint, LoadError, Reader, Writer};

/// The prediction interval level asked of GetCostForecast, in percent.
pub const PREDICTION_INTERVAL_LEVEL: i32 = 80;

pub const FORECAST: FamilyDesc = gauge(
    "aws_cost_month_forecast_usd",
    "AWS's forecast in USD for the whole current UTC month: month to date plus the forecast for the rest",
    Some("usd"),
);
pub const FORECAST_LOWER: FamilyDesc = gauge(
    "aws_cost_month_forecast_lower_usd",
    "Lower bound of the 80% prediction interval of aws_cost_month_forecast_usd",
    Some("usd"),
);
pub const FORECAST_UPPER: FamilyDesc = gauge(
    "aws_cost_month_forecast_upper_usd",
    "Upper bound of the 80% prediction interval of aws_cost_month_forecast_usd",
    Some("usd"),
);
pub const BUDGET_FORECAST: FamilyDesc = gauge(
    "aws_cost_budget_month_forecast_usd",
    "Forecast in USD for the whole current UTC month within the budget's filter",
    Some("usd"),
);

/// The families of the forecast part.
pub const FAMILIES: [FamilyDesc; 4] = [FORECAST, FORECAST_LOWER, FORECAST_UPPER, BUDGET_FORECAST];

/// The forecast part.
pub struct Forecast;

/// A forecast for a period: the mean and, when AWS gives one, the prediction interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForecastValue {
    pub mean: f64,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
}

/// The forecasts for the rest of the month (`None`: nothing left to forecast).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Forecasts {
    /// Per cost basis.
    pub bases: BTreeMap<CostBasis, Option<ForecastValue>>,
    /// Per filtered budget, within its filter.
    pub budgets: BTreeMap<String, Option<ForecastValue>>,
}

impl Part for Forecast {
    const NAME: &'static str = "forecast";
    const FAMILIES: &'static [FamilyDesc] = &FAMILIES;
    type Fetched = Forecasts;
    type Kept = Forecasts;

    fn enabled(integration: &Integration) -> bool {
        integration.forecast
    }

    /// `forecast` (default on).
    fn configure(
        raw: &NativeIntegration,
        _keys: &Keys<'_>,
        into: &mut Integration,
    ) -> Result<(), ConfigError> {
        into.forecast = raw.forecast.unwrap_or(true);
        Ok(())
    }

    /// The account, the cost bases and the budgets (the month to date added to the forecast
    /// is the costs part's).
    fn fingerprint(integration: &Integration, _data_delay_days: u32, print: &mut Fingerprint) {
        print.str(&integration.account_id);
        super::print_bases(print, &integration.cost_basis);
        super::print_budgets(print, &integration.budgets);
    }

    /// The rest-of-month forecast per cost basis and per filtered budget (none on the last day).
    async fn fetch(cx: &Cx<'_>, _kept: &Forecasts) -> Result<Forecasts, PartError> {
        let ce = &cx.clients.cost_explorer;
        let integration = cx.integration;
        let mut forecasts = Forecasts::default();
        let filtered = integration.budgets.iter().filter(|b| b.is_filtered());
        let Some((start, end)) = cx.period.forecast_period() else {
            for basis in &integration.cost_basis {
                forecasts.bases.insert(*basis, None);
            }
            for budget in filtered {
                forecasts.budgets.insert(budget.name.clone(), None);
            }
            return Ok(forecasts);
        };
        for basis in &integration.cost_basis {
            let forecast = ce
                .forecast(start, end, *basis, &[])
                .await
                .map_err(|err| PartError::new(&format!("forecast ({basis})"), &err))?;
            forecasts.bases.insert(*basis, Some(forecast));
        }
        for budget in filtered {
            let mut filter = Vec::new();
            if !budget.accounts.is_empty() {
                filter.push((Dimension::LinkedAccount, budget.accounts.clone()));
            }
            if !budget.services.is_empty() {
                filter.push((Dimension::Service, budget.services.clone()));
            }
            let forecast = ce
                .forecast(start, end, budget.cost_basis, &filter)
                .await
                .map_err(|err| {
                    PartError::new(&format!("forecast of budget {:?}", budget.name), &err)
                })?;
            forecasts
                .budgets
                .insert(budget.name.clone(), Some(forecast));
        }
        Ok(forecasts)
    }

    fn remember(_cx: &Cx<'_>, fetched: &Forecasts, kept: &mut Forecasts) {
        kept.clone_from(fetched);
    }

    /// Always from the forecasts it keeps (this refresh's, or the last ones) and the current
    /// month to date.
    fn encode(
        cx: &Encoding<'_>,
        _fetched: Option<&Forecasts>,
        kept: &Forecasts,
        out: &mut Out<'_>,
    ) {
        let integration = cx.integration;
        let name = cx.identity;
        let totals = &cx.shared.totals;
        let mut mean = Lines::new(&FORECAST, name);
        let mut lower = Lines::new(&FORECAST_LOWER, name);
        let mut upper = Lines::new(&FORECAST_UPPER, name);
        for (index, basis) in integration.cost_basis.iter().enumerate() {
            let Some(forecast) = kept.bases.get(basis) else {
                continue;
            };
            let mtd = totals.month.get(index).copied().unwrap_or(0.0);
            let labels = [("cost_basis", basis.as_str())];
            mean.sample(&labels, mtd + forecast.map_or(0.0, |f| f.mean));
            if let Some(value) = forecast.and_then(|f| f.lower) {
                lower.sample(&labels, mtd + value);
            }
            if let Some(value) = forecast.and_then(|f| f.upper) {
                upper.sample(&labels, mtd + value);
            }
        }
        out.set(&FORECAST, mean.block(0));
        out.set(&FORECAST_LOWER, lower.block(0));
        out.set(&FORECAST_UPPER, upper.block(0));
        let mut forecast = Lines::new(&BUDGET_FORECAST, name);
        for budget in &integration.budgets {
            let rest = if budget.is_filtered() {
                kept.budgets.get(&budget.name)
            } else {
                kept.bases.get(&budget.cost_basis)
            };
            if let Some(rest) = rest {
                let mtd = totals.budgets.get(&budget.name).copied().unwrap_or(0.0);
                forecast.sample(
                    &[("budget", budget.name.as_str())],
                    mtd + rest.map_or(0.0, |r| r.mean),
                );
            }
        }
        out.set(&BUDGET_FORECAST, forecast.block(0));
    }

    fn save(kept: &Forecasts, w: &mut Writer) {
        let forecast = |w: &mut Writer, value: &Option<ForecastValue>| match value {
            None => w.u8(0),
            Some(f) => {
                w.u8(1);
                w.f64(f.mean);
                w.opt_f64(f.lower);
                w.opt_f64(f.upper);
            }
        };
        w.u64(kept.bases.len() as u64);
        for (basis, value) in &kept.bases {
            w.str(basis.as_str());
            forecast(w, value);
        }
        w.u64(kept.budgets.len() as u64);
        for (name, value) in &kept.budgets {
            w.str(name);
            forecast(w, value);
        }
    }

    fn load(r: &mut Reader<'_>) -> Result<Forecasts, LoadError> {
        let forecast = |r: &mut Reader| -> Result<Option<ForecastValue>, LoadError> {
            Ok(match r.u8()? {
                0 => None,
                1 => Some(ForecastValue {
                    mean: r.f64()?,
                    lower: r.opt_f64()?,
                    upper: r.opt_f64()?,
                }),
                _ => return Err(LoadError::Malformed("a bad forecast flag")),
            })
        };
        let mut kept = Forecasts::default();
        for _ in 0..r.count()? {
            let basis =
                CostBasis::parse(r.str()?).ok_or(LoadError::Malformed("an unknown cost basis"))?;
            kept.bases.insert(basis, forecast(r)?);
        }
        for _ in 0..r.count()? {
            let name = r.str()?.to_string();
            kept.budgets.insert(name, forecast(r)?);
        }
        Ok(kept)
    }
}

impl CostExplorer {
    /// AWS's forecast of one cost basis for `[start, end)` (start today or later).
    pub async fn forecast(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        basis: CostBasis,
        filter: &[(Dimension, Vec<String>)],
    ) -> Result<ForecastValue, CostExplorerError> {
        let out = self
            .client()
            .get_cost_forecast()
            .time_period(date_interval(start, end)?)
            .metric(Metric::from(basis.forecast_metric()))
            .granularity(SdkGranularity::Monthly)
            .prediction_interval_level(PREDICTION_INTERVAL_LEVEL)
            .set_filter(filter_expression(filter))
            .send()
            .await
            .map_err(|e| api_error("GetCostForecast", e))?;
        let total = out.total().ok_or_else(|| {
            CostExplorerError::Malformed("GetCostForecast returned no Total".into())
        })?;
        let mean = parse_amount(basis.forecast_metric(), total)?;
        let bound =
            |get: fn(&ForecastResult) -> Option<&str>| -> Result<Option<f64>, CostExplorerError> {
                let mut sum = 0.0;
                for result in out.forecast_results_by_time() {
                    let Some(text) = get(result) else {
                        return Ok(None);
                    };
                    sum += parse_number(basis.forecast_metric(), text)?;
                }
                Ok((!out.forecast_results_by_time().is_empty()).then_some(sum))
            };
        Ok(ForecastValue {
            mean,
            lower: bound(ForecastResult::prediction_interval_lower_bound)?,
            upper: bound(ForecastResult::prediction_interval_upper_bound)?,
        })
    }
}
