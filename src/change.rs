//! Change detection: before buying its full plan, a refresh asks Cost Explorer one cheap
//! question whose answer changes whenever the served cost data would, and stops there when the
//! answer is the one the served data's refresh saw.
//!
//! The question ([`probe`]) is one `GetCostAndUsage` at `DAILY` granularity over every day the
//! cost queries cover ([`Period::query_start`] to [`Period::query_end`]: the month to date, and
//! the previous month's data day when the data day is in it), with every configured cost
//! basis, and AWS's `Estimated` flags in its answer: any new usage, a day turning final, a
//! credit or refund, a new cost basis figure changes its bytes. It is grouped by account
//! ([`Shape::ByAccount`]) while that fits one page (a standalone account or a small
//! organization, a month of days each), and then, for a single account, it is also the plan's
//! discovery of accounts, so that a change costs no extra request; larger organizations are
//! asked ungrouped ([`Shape::Total`], one page). The first check (nothing kept) asks by account
//! and falls back to the total when the first page is not the whole answer: one request more,
//! once.
//!
//! The verdict ([`verdict`]): unchanged only when the answer is byte for byte the one kept, in
//! the same shape, for the same dates (the data day has not moved), and the served data is
//! younger than `max_data_age` (for changes that move cost between groups without changing
//! any total: a newly activated tag's backfill, an edited cost category rule); otherwise the
//! full plan runs, and the answer is kept with the data it fetched.
//!
//! What an unchanged check leaves alone: every part that follows the cost data (costs, budgets,
//! tags, resources, forecast, views). Parts with their own cadence (commitments, anomalies,
//! Organizations) still run when due ([`crate::parts::Part::OWN_CADENCE`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::cost_explorer::{
    CostExplorer, CostExplorerError, Dimension, Granularity, GroupKey, Period, Query, QueryStats,
};
use crate::model::CostBasis;
use crate::storage::{LoadError, Reader, Writer};

/// How a check asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Ungrouped: one total per day and cost basis.
    Total,
    /// Grouped by account: for an integration with a single account, whose plan then needs
    /// no discovery query.
    ByAccount,
}

impl Shape {
    fn code(self) -> u8 {
        match self {
            Shape::Total => 0,
            Shape::ByAccount => 1,
        }
    }
}

/// One check's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The dates it covered.
    pub period: Period,
    pub shape: Shape,
    /// Every page's body as Cost Explorer sent it.
    pub body: Vec<u8>,
    /// Billed requests (pages).
    pub pages: u32,
    /// [`Shape::ByAccount`]: the accounts it saw, with the names AWS gave.
    pub accounts: BTreeSet<String>,
    pub names: BTreeMap<String, String>,
}

impl Answer {
    /// The accounts of the period, when this answer can stand in for the plan's discovery:
    /// grouped by account, for `period`, and at most one account (with more, the plan needs
    /// the record types as well).
    pub fn discovered(&self, period: Period) -> Option<&BTreeSet<String>> {
        (self.shape == Shape::ByAccount && self.period == period && self.accounts.len() <= 1)
            .then_some(&self.accounts)
    }
}

/// Asks the question, in the shape of the `last` answer (see the module documentation).
pub async fn probe(
    cost_explorer: &CostExplorer,
    period: Period,
    bases: &[CostBasis],
    last: Option<&Answer>,
) -> Result<Answer, CostExplorerError> {
    let shape = match last {
        // One page by account: by account again (more pages come when the organization grew).
        Some(last) if last.shape == Shape::ByAccount && last.pages == 1 => Shape::ByAccount,
        Some(_) => Shape::Total,
        None => {
            // By account, if that is one page; else ungrouped.
            let query = question(period, Shape::ByAccount);
            let mut accounts = BTreeSet::new();
            let mut pager = cost_explorer.pager(&query, bases)?.keeping_bodies();
            pager.next_page(&mut collect(&mut accounts)).await?;
            if !pager.has_more() {
                return Ok(answer(
                    period,
                    Shape::ByAccount,
                    pager.into_stats(),
                    accounts,
                ));
            }
            let first = pager.into_stats().pages;
            let mut total = ask(cost_explorer, period, bases, Shape::Total).await?;
            total.pages += first;
            return Ok(total);
        }
    };
    ask(cost_explorer, period, bases, shape).await
}

/// The question in `shape`, every page.
async fn ask(
    cost_explorer: &CostExplorer,
    period: Period,
    bases: &[CostBasis],
    shape: Shape,
) -> Result<Answer, CostExplorerError> {
    let query = question(period, shape);
    let mut accounts = BTreeSet::new();
    let stats = cost_explorer
        .pager(&query, bases)?
        .keeping_bodies()
        .finish(&mut collect(&mut accounts))
        .await?;
    Ok(answer(period, shape, stats, accounts))
}

fn question(period: Period, shape: Shape) -> Query {
    let group_by = match shape {
        Shape::Total => Vec::new(),
        Shape::ByAccount => vec![GroupKey::Dimension(Dimension::LinkedAccount)],
    };
    Query::cost(
        Granularity::Daily,
        (period.query_start(), period.query_end()),
        group_by,
        Vec::new(),
    )
}

/// A sink that collects each group's account (the first key, when grouped by account).
fn collect(
    accounts: &mut BTreeSet<String>,
) -> impl FnMut(chrono::NaiveDate, &[&str], &[f64]) -> Result<(), CostExplorerError> + '_ {
    |_, keys, _| {
        if let Some(account) = keys.first() {
            accounts.insert(account.to_string());
        }
        Ok(())
    }
}

fn answer(period: Period, shape: Shape, stats: QueryStats, accounts: BTreeSet<String>) -> Answer {
    Answer {
        period,
        shape,
        body: stats.bodies,
        pages: stats.pages,
        accounts,
        names: stats.names,
    }
}

/// Why a check buys the full plan, or that it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The same answer for the same dates, and the served data is young enough.
    Unchanged,
    /// No answer kept (the first refresh, or data stored before change detection).
    First,
    /// The data day (or today's month) moved since the served data's fetch.
    NewDay,
    /// The served data is `max_data_age` old.
    MaxAge,
    /// The answer differs: AWS changed the data.
    Changed,
    /// A part is owed a fetch (a reload changed its settings).
    Owed,
    /// A part's last fetch failed: the plan runs again to retry it.
    Retry,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Unchanged => "unchanged",
            Verdict::First => "first",
            Verdict::NewDay => "new_day",
            Verdict::MaxAge => "max_data_age",
            Verdict::Changed => "changed",
            Verdict::Owed => "owed",
            Verdict::Retry => "retry",
        }
    }
}

/// What a check compares its answer with.
pub struct Served<'a> {
    /// The answer kept with the served cost data.
    pub answer: Option<&'a Answer>,
    /// When the served cost data was fetched.
    pub fetched_at: DateTime<Utc>,
    /// Whether a part is owed a fetch.
    pub owed: bool,
    /// Whether a part's last fetch failed (its last good series are served).
    pub partial: bool,
}

/// The verdict on `answer`, asked at `now`: see the module documentation.
pub fn verdict(
    served: &Served<'_>,
    answer: &Answer,
    now: DateTime<Utc>,
    max_data_age: std::time::Duration,
) -> Verdict {
    let Some(kept) = served.answer else {
        return Verdict::First;
    };
    if served.owed {
        Verdict::Owed
    } else if served.partial {
        Verdict::Retry
    } else if kept.period != answer.period {
        Verdict::NewDay
    } else if (now - served.fetched_at)
        .to_std()
        .is_ok_and(|age| age >= max_data_age)
    {
        Verdict::MaxAge
    } else if kept.shape != answer.shape || kept.body != answer.body {
        Verdict::Changed
    } else {
        Verdict::Unchanged
    }
}

/// What change detection keeps with the served cost data (in the costs part, stored with it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    /// The answer of the check before the served cost data's fetch.
    pub answer: Option<Arc<Answer>>,
    /// Billed requests of the served cost data's plan (the costs part's queries).
    pub plan_requests: Option<u64>,
}

impl Seen {
    /// Writes it after what the costs part kept before change detection existed, so that a
    /// record written before reads as "nothing seen".
    pub fn save(&self, w: &mut Writer) {
        w.u8(1);
        match &self.answer {
            None => w.u8(0),
            Some(answer) => {
                w.u8(1);
                w.i64(days(answer.period.today));
                w.i64(days(answer.period.data_day));
                w.u8(answer.shape.code());
                w.bytes(&answer.body);
                w.u64(u64::from(answer.pages));
                w.strs(&answer.accounts.iter().cloned().collect::<Vec<_>>());
                w.map(&answer.names);
            }
        }
        w.u64(self.plan_requests.unwrap_or(u64::MAX));
    }

    /// Reads what [`Seen::save`] wrote; nothing at all reads as nothing seen.
    pub fn load(r: &mut Reader<'_>) -> Result<Self, LoadError> {
        if r.is_empty() {
            return Ok(Self::default());
        }
        if r.u8()? != 1 {
            return Err(LoadError::Malformed("an unknown change detection record"));
        }
        let answer = match r.u8()? {
            0 => None,
            1 => {
                let today = from_days(r.i64()?)?;
                let data_day = from_days(r.i64()?)?;
                let shape = match r.u8()? {
                    0 => Shape::Total,
                    1 => Shape::ByAccount,
                    _ => return Err(LoadError::Malformed("an unknown check shape")),
                };
                let body = r.bytes()?.to_vec();
                let pages = u32::try_from(r.u64()?)
                    .map_err(|_| LoadError::Malformed("a page count out of range"))?;
                let accounts = r.strs()?.into_iter().collect();
                let names = r.map()?;
                Some(Arc::new(Answer {
                    period: Period { today, data_day },
                    shape,
                    body,
                    pages,
                    accounts,
                    names,
                }))
            }
            _ => return Err(LoadError::Malformed("an unknown check answer")),
        };
        let plan_requests = Some(r.u64()?).filter(|n| *n != u64::MAX);
        Ok(Self {
            answer,
            plan_requests,
        })
    }
}

fn days(day: chrono::NaiveDate) -> i64 {
    use chrono::Datelike as _;
    i64::from(day.num_days_from_ce())
}

fn from_days(days: i64) -> Result<chrono::NaiveDate, LoadError> {
    i32::try_from(days)
        .ok()
        .and_then(chrono::NaiveDate::from_num_days_from_ce_opt)
        .ok_or(LoadError::Malformed("a date out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    fn answer(day: u32, body: &str) -> Answer {
        let today = NaiveDate::from_ymd_opt(2026, 12, day).unwrap_or_default();
        Answer {
            period: Period::new(today, 1),
            shape: Shape::Total,
            body: body.as_bytes().to_vec(),
            pages: 1,
            accounts: BTreeSet::new(),
            names: BTreeMap::new(),
        }
    }

    #[test]
    fn the_verdict_names_the_first_reason_to_buy_the_plan() {
        let at = |h| Utc.with_ymd_and_hms(2026, 12, 5, h, 0, 0).unwrap();
        let kept = answer(5, "{a}");
        let age = std::time::Duration::from_secs(24 * 3600);
        let served = |answer, owed| Served {
            answer,
            fetched_at: at(1),
            owed,
            partial: false,
        };
        let same = answer(5, "{a}");
        assert_eq!(
            verdict(&served(None, false), &same, at(2), age),
            Verdict::First
        );
        assert_eq!(
            verdict(&served(Some(&kept), false), &same, at(2), age),
            Verdict::Unchanged
        );
        assert_eq!(
            verdict(&served(Some(&kept), true), &same, at(2), age),
            Verdict::Owed
        );
        assert_eq!(
            verdict(&served(Some(&kept), false), &answer(5, "{b}"), at(2), age),
            Verdict::Changed
        );
        assert_eq!(
            verdict(&served(Some(&kept), false), &answer(6, "{a}"), at(2), age),
            Verdict::NewDay
        );
        let retry = Served {
            answer: Some(&kept),
            fetched_at: at(1),
            owed: false,
            partial: true,
        };
        assert_eq!(verdict(&retry, &same, at(2), age), Verdict::Retry);
        let short = std::time::Duration::from_secs(3600);
        assert_eq!(
            verdict(&served(Some(&kept), false), &same, at(2), short),
            Verdict::MaxAge
        );
        let mut grouped = answer(5, "{a}");
        grouped.shape = Shape::ByAccount;
        assert_eq!(
            verdict(&served(Some(&kept), false), &grouped, at(2), age),
            Verdict::Changed
        );
    }

    #[test]
    fn what_was_seen_survives_storage_and_old_records_read_as_nothing_seen() {
        let mut grouped = answer(5, "{\"ResultsByTime\":[]}");
        grouped.shape = Shape::ByAccount;
        grouped.accounts.insert("111111111111".into());
        grouped.names.insert("111111111111".into(), "Payer".into());
        let seen = Seen {
            answer: Some(Arc::new(grouped)),
            plan_requests: Some(2),
        };
        let mut w = Writer::default();
        seen.save(&mut w);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(Seen::load(&mut r).ok(), Some(seen));
        assert!(r.end().is_ok());
        let mut empty = Reader::new(&[]);
        assert_eq!(Seen::load(&mut empty).ok(), Some(Seen::default()));
        let none = Seen::default();
        let mut w = Writer::default();
        none.save(&mut w);
        let bytes = w.into_bytes();
        assert_eq!(Seen::load(&mut Reader::new(&bytes)).ok(), Some(none));
    }
}
