//! When the simulated Cost Explorer publishes new cost data, and what each publication
//! changes.
//!
//! AWS updates Cost Explorer's data a few times a day ("up to three times daily"): today's and
//! yesterday's costs grow as usage is billed, a recent day's `Estimated` flag turns false once
//! it is final, and credits land on earlier days of the month. Without a [`Publications`]
//! schedule the simulator serves each dataset as generated, whatever the time (the demo's and
//! the tests' behaviour); with one, what it serves is a pure function of the dataset and the
//! [`Edition`] its clock reads: the UTC day and how many of that day's publications have
//! happened. Between two publications every answer is the same, byte for byte.
//!
//! # The model
//!
//! A dataset given to the simulator holds every day's *final* amounts. With `n` publications a
//! day (at [`Publications::times`], UTC), at an edition (day `D`, `k` of its publications
//! made), a day `d` has seen `m(d) = n × (D − d) + k` publications (none for a day after `D`),
//! and is served thus ([`Publications::publish`]):
//!
//! - `m(d) = 0` (a day after `D`, or `D` before its first publication): no rows;
//! - `0 < m(d) < M` (`M` is [`Publications::final_after`]): every row of the day with each
//!   amount `amount × m(d) / M`, truncated toward zero to Cost Explorer's 1e-10 USD: new usage
//!   for the open days at each publication, partial days as AWS publishes them; the day is
//!   `Estimated`;
//! - `m(d) ≥ M`: the day's rows as given, final, not `Estimated`.
//!
//! A period is `Estimated` while its last day is, as before. The default schedule publishes at
//! 02:00, 10:00 and 18:00 UTC and a day is final at its fifth publication, the 10:00 one of the
//! next day: before 10:00 today and yesterday are `Estimated`, from 10:00 only today.
//!
//! **Late credits.** At the [`Publications::credit_at`]-th publication of each day `p` (by
//! default the third, 18:00), a `Credit` row appears on an earlier day of the month,
//! [`Publications::late_credit`]: three days before `p`, or the first of the month if that is
//! later; none when `p` is the first of a month. Its amount is −(10 + 0.10 × the day of the
//! month of `p`) USD in every cost basis (−12.30 USD for a credit published on the 23rd); its
//! account, service, resource, tags, dimensions and cost categories are those of the dataset's
//! first `Credit` row (the payer's EC2 credit in generated data), so every grouping sees it.
//! A dataset without a `Credit` row gets none. Credits published on every day up to the
//! edition are there (those whose day has rows in the dataset).
//!
//! The published dataset's `today` is `D`: the forecast, resource-level data's 14 days and
//! the commitment windows follow the clock's day. Every operation reads the one published
//! dataset, so any grouping's groups sum to the ungrouped total of the same filter in every
//! edition, and forecasts, views, cost categories and resource-level data change with the
//! cost rows and only then.

use std::sync::Arc;

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveTime, Utc};

use super::dataset::{Dataset, SimRow, UNITS_PER_USD};

/// The wall clock the simulator reads, replaceable in tests: the same type as the exporter's
/// `clock::Clock`, so a test can hand one clock to both.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// A clock that always reads `at`.
pub fn fixed_clock(at: DateTime<Utc>) -> Clock {
    Arc::new(move || at)
}

/// What Cost Explorer has published by an instant: the UTC day, and how many of that day's
/// publications have happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Edition {
    pub day: NaiveDate,
    pub published: u32,
}

/// A late credit: the day it lands on, and its amount in 1e-10 USD (the same in every cost
/// basis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LateCredit {
    pub day: NaiveDate,
    pub units: i64,
}

/// When Cost Explorer publishes each day, when a day becomes final, and which publication
/// brings a late credit. See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publications {
    /// Times of day (UTC), sorted, distinct, at least one.
    times: Vec<NaiveTime>,
    /// A day is final from its `final_after`-th publication on (at least 1).
    final_after: u32,
    /// The publication of each day (1-based, at most `times.len()`) that brings a late credit.
    credit_at: u32,
}

/// The default times of day of publications.
const DEFAULT_TIMES: [(u32, u32); 3] = [(2, 0), (10, 0), (18, 0)];

impl Default for Publications {
    /// Three a day, at 02:00, 10:00 and 18:00 UTC; a day final at its fifth publication
    /// (10:00 the next day); a late credit at each day's third (18:00).
    fn default() -> Self {
        let times = DEFAULT_TIMES
            .iter()
            .filter_map(|&(h, m)| NaiveTime::from_hms_opt(h, m, 0))
            .collect();
        Publications {
            times,
            final_after: 5,
            credit_at: 3,
        }
    }
}

impl Publications {
    /// Publications at `times` of day (UTC; sorted, duplicates dropped), with a day final at
    /// the second publication of the next day (`times.len() + 2`) and a late credit at each
    /// day's last publication. `None` without any time.
    pub fn at(times: &[NaiveTime]) -> Option<Self> {
        let mut times = times.to_vec();
        times.sort_unstable();
        times.dedup();
        let n = u32::try_from(times.len()).ok().filter(|n| *n > 0)?;
        Some(Publications {
            times,
            final_after: n.saturating_add(2),
            credit_at: n,
        })
    }

    /// Parses times of day such as `02:00,10:00,18:00` (`HH:MM` or `HH:MM:SS`, UTC,
    /// comma-separated), as [`Publications::at`] takes them.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut times = Vec::new();
        for part in spec.split(',') {
            let part = part.trim();
            let time = NaiveTime::parse_from_str(part, "%H:%M:%S")
                .or_else(|_| NaiveTime::parse_from_str(part, "%H:%M"))
                .map_err(|_| format!("{part:?} is not a time of day (HH:MM, UTC)"))?;
            times.push(time);
        }
        Publications::at(&times).ok_or_else(|| "no time of day given".to_string())
    }

    /// A day is final (its amounts whole, not `Estimated`) from its `publications`-th
    /// publication on, counted from the first on the day itself (at least 1).
    pub fn with_final_after(mut self, publications: u32) -> Self {
        self.final_after = publications.max(1);
        self
    }

    /// The publication of each day (1-based, clamped to the day's publications) that brings
    /// that day's late credit.
    pub fn with_credit_at(mut self, publication: u32) -> Self {
        self.credit_at = publication.clamp(1, self.per_day());
        self
    }

    /// The times of day (UTC) of the publications, in order.
    pub fn times(&self) -> &[NaiveTime] {
        &self.times
    }

    /// Publications a day.
    pub fn per_day(&self) -> u32 {
        u32::try_from(self.times.len()).unwrap_or(u32::MAX)
    }

    /// The publication (counted from the first on the day itself) from which a day is final.
    pub fn final_after(&self) -> u32 {
        self.final_after
    }

    /// The publication of each day that brings its late credit (1-based).
    pub fn credit_at(&self) -> u32 {
        self.credit_at
    }

    /// What has been published at `at`: a publication at 10:00 has happened at 10:00:00.
    pub fn edition_at(&self, at: DateTime<Utc>) -> Edition {
        let time = at.time();
        Edition {
            day: at.date_naive(),
            published: u32::try_from(self.times.iter().filter(|t| **t <= time).count())
                .unwrap_or(u32::MAX),
        }
    }

    /// The instant of the `publication`-th publication (1-based) of `day`; `None` outside
    /// `1..=per_day()`.
    pub fn instant(&self, day: NaiveDate, publication: u32) -> Option<DateTime<Utc>> {
        let index = usize::try_from(publication.checked_sub(1)?).ok()?;
        let time = self.times.get(index)?;
        Some(day.and_time(*time).and_utc())
    }

    /// The first publication after `at` (strictly).
    pub fn next_after(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        let time = at.time();
        let day = at.date_naive();
        match self.times.iter().find(|t| **t > time) {
            Some(t) => day.and_time(*t).and_utc(),
            None => {
                let next = day.succ_opt().unwrap_or(day);
                // `times` is never empty.
                let first = self.times.first().copied().unwrap_or(NaiveTime::MIN);
                next.and_time(first).and_utc()
            }
        }
    }

    /// How many publications `day` has seen by `edition`: `per_day × (edition.day − day) +
    /// edition.published`, none for a day after the edition's.
    pub fn publications_of(&self, day: NaiveDate, edition: Edition) -> u64 {
        let back = (edition.day - day).num_days();
        if back < 0 {
            return 0;
        }
        u64::from(self.per_day())
            .saturating_mul(back.unsigned_abs())
            .saturating_add(u64::from(edition.published))
    }

    /// Whether `day` is final by `edition`: whole, not `Estimated`.
    pub fn is_final(&self, day: NaiveDate, edition: Edition) -> bool {
        self.publications_of(day, edition) >= u64::from(self.final_after)
    }

    /// The first day that is not final by `edition` (every later day is not either; the day
    /// after the edition's at the latest).
    pub fn estimated_from(&self, edition: Edition) -> NaiveDate {
        let next = edition.day.succ_opt().unwrap_or(edition.day);
        if edition.published >= self.final_after {
            return next;
        }
        // The most days back j with per_day × j + published < final_after.
        let back = (self.final_after - edition.published - 1) / self.per_day().max(1);
        edition
            .day
            .checked_sub_days(Days::new(u64::from(back)))
            .unwrap_or(edition.day)
    }

    /// An amount of a row of `day` as served by `edition`: `None` when the day has no
    /// publication yet, else `units × m / final_after` truncated toward zero (`m` the day's
    /// publications), whole once final.
    pub fn amount(&self, units: i64, day: NaiveDate, edition: Edition) -> Option<i64> {
        let seen = self.publications_of(day, edition);
        let whole = u64::from(self.final_after);
        match seen {
            0 => None,
            seen if seen >= whole => Some(units),
            // seen < final_after ≤ u32::MAX: exact in i128, and the result within i64.
            seen => {
                let scaled = i128::from(units) * i128::from(seen) / i128::from(whole);
                Some(i64::try_from(scaled).unwrap_or(units))
            }
        }
    }

    /// The late credit the [`Publications::credit_at`]-th publication of `published_on`
    /// brings: on three days before, or the first of its month if later; `None` on the first
    /// of a month.
    pub fn late_credit(&self, published_on: NaiveDate) -> Option<LateCredit> {
        let first = published_on.with_day(1)?;
        if published_on == first {
            return None;
        }
        let day = published_on
            .checked_sub_days(Days::new(3))
            .map_or(first, |d| d.max(first));
        let cents = 1_000 + 10 * i64::from(published_on.day());
        Some(LateCredit {
            day,
            units: -cents * (UNITS_PER_USD / 100),
        })
    }

    /// Whether the late credit of `published_on` has been published by `edition`.
    fn credit_published(&self, published_on: NaiveDate, edition: Edition) -> bool {
        published_on < edition.day
            || (published_on == edition.day && edition.published >= self.credit_at)
    }

    /// The dataset as Cost Explorer serves it at `edition`: `base` holds every day's final
    /// amounts (see the [module documentation](self)). A dataset without rows is served as
    /// given.
    pub fn publish(&self, base: &Dataset, edition: Edition) -> Dataset {
        let (Some(first), Some(last)) = (base.rows.first(), base.rows.last()) else {
            return base.clone();
        };
        let (first, last) = (first.day, last.day);
        let template = base.rows.iter().find(|r| r.record_type() == "Credit");
        // Late credits, by the day they land on: from publications on the days after the
        // first through three days after the last (later ones land after the last day).
        let mut credits: Vec<SimRow> = Vec::new();
        if let Some(template) = template {
            let mut published_on = first;
            let until = last
                .checked_add_days(Days::new(3))
                .unwrap_or(last)
                .min(edition.day);
            while published_on < until {
                let Some(next) = published_on.succ_opt() else {
                    break;
                };
                published_on = next;
                if !self.credit_published(published_on, edition) {
                    continue;
                }
                if let Some(credit) = self.late_credit(published_on)
                    && credit.day >= first
                    && credit.day <= last
                {
                    credits.push(template.republished(credit.day, [credit.units; 5]));
                }
            }
        }
        // Stable: credits of one day in the order they were published.
        credits.sort_by_key(|r| r.day);
        let shown = base.day_rows(first, edition.day.succ_opt().unwrap_or(edition.day));
        let mut rows = Vec::with_capacity(shown.len() + credits.len());
        let mut credits = credits.into_iter().peekable();
        let mut day = first;
        let mut open: Option<(NaiveDate, bool)> = None;
        for row in shown {
            if row.day != day {
                // Each day's credits after its rows.
                while let Some(credit) = credits.next_if(|c| c.day < row.day) {
                    rows.push(credit);
                }
                day = row.day;
            }
            let seen = match open {
                Some((d, seen)) if d == row.day => seen,
                _ => {
                    let seen = self.publications_of(row.day, edition) > 0;
                    open = Some((row.day, seen));
                    seen
                }
            };
            if !seen {
                continue;
            }
            let amounts = row
                .amounts
                .map(|units| self.amount(units, row.day, edition).unwrap_or(units));
            rows.push(if amounts == row.amounts {
                row.clone()
            } else {
                row.republished(row.day, amounts)
            });
        }
        rows.extend(credits);
        base.with_rows(rows, Some(edition.day), Some(self.estimated_from(edition)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{CostMetric, DatasetSpec};

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        day(d).and_hms_opt(h, m, 0).unwrap().and_utc()
    }

    fn edition(d: u32, published: u32) -> Edition {
        Edition {
            day: day(d),
            published,
        }
    }

    #[test]
    fn the_default_schedule_publishes_three_times_a_day() {
        let p = Publications::default();
        assert_eq!(
            p.times()
                .iter()
                .map(|t| t.format("%H:%M").to_string())
                .collect::<Vec<_>>(),
            ["02:00", "10:00", "18:00"]
        );
        assert_eq!((p.per_day(), p.final_after(), p.credit_at()), (3, 5, 3));
        assert_eq!(
            Publications::parse("18:00, 02:00,10:00,10:00:00"),
            Ok(p.clone())
        );
        assert_eq!(
            Publications::at(p.times()),
            Some(p.clone()),
            "the default is what `at` makes of its times"
        );
        assert_eq!(p.edition_at(at(23, 1, 59)), edition(23, 0));
        assert_eq!(p.edition_at(at(23, 2, 0)), edition(23, 1));
        assert_eq!(p.edition_at(at(23, 17, 59)), edition(23, 2));
        assert_eq!(p.edition_at(at(23, 23, 59)), edition(23, 3));
        assert_eq!(p.edition_at(at(24, 0, 0)), edition(24, 0));
        assert_eq!(p.next_after(at(23, 2, 0)), at(23, 10, 0));
        assert_eq!(p.next_after(at(23, 18, 0)), at(24, 2, 0));
        assert_eq!(p.instant(day(23), 2), Some(at(23, 10, 0)));
        assert_eq!(p.instant(day(23), 0), None);
        assert_eq!(p.instant(day(23), 4), None);
    }

    #[test]
    fn bad_schedules_are_refused_or_clamped() {
        assert_eq!(
            Publications::parse("25:00"),
            Err("\"25:00\" is not a time of day (HH:MM, UTC)".to_string())
        );
        assert_eq!(
            Publications::parse(""),
            Err("\"\" is not a time of day (HH:MM, UTC)".to_string())
        );
        assert_eq!(Publications::at(&[]), None);
        let once = Publications::parse("06:30").unwrap();
        assert_eq!(
            (once.per_day(), once.final_after(), once.credit_at()),
            (1, 3, 1)
        );
        let p = once.with_final_after(0).with_credit_at(7);
        assert_eq!((p.final_after(), p.credit_at()), (1, 1));
    }

    #[test]
    fn days_grow_and_turn_final_publication_by_publication() {
        let p = Publications::default();
        // (edition, publications of the 23rd, of the 22nd, first Estimated day)
        for (e, today, yesterday, estimated) in [
            (edition(23, 0), 0, 3, day(22)),
            (edition(23, 1), 1, 4, day(22)),
            (edition(23, 2), 2, 5, day(23)),
            (edition(23, 3), 3, 6, day(23)),
            (edition(24, 0), 3, 6, day(23)),
            (edition(24, 2), 5, 8, day(24)),
        ] {
            assert_eq!(p.publications_of(day(23), e), today, "{e:?}");
            assert_eq!(p.publications_of(day(22), e), yesterday, "{e:?}");
            assert_eq!(p.estimated_from(e), estimated, "{e:?}");
            assert_eq!(p.is_final(day(22), e), yesterday >= 5);
        }
        assert_eq!(p.publications_of(day(24), edition(23, 3)), 0);
        // A day final at once: even today is final after enough publications.
        let fast = Publications::default().with_final_after(2);
        assert_eq!(fast.estimated_from(edition(23, 1)), day(23));
        assert_eq!(fast.estimated_from(edition(23, 2)), day(24));
        // Amounts: a fifth more of the final amount at each publication, truncated.
        assert_eq!(p.amount(1_000, day(23), edition(23, 0)), None);
        assert_eq!(p.amount(1_000, day(23), edition(23, 1)), Some(200));
        assert_eq!(p.amount(-7, day(23), edition(23, 2)), Some(-2));
        assert_eq!(p.amount(1_000, day(22), edition(23, 1)), Some(800));
        assert_eq!(p.amount(1_000, day(22), edition(23, 2)), Some(1_000));
        assert_eq!(p.amount(1_000, day(24), edition(23, 3)), None);
    }

    #[test]
    fn late_credits_land_on_an_earlier_day_of_the_month() {
        let p = Publications::default();
        assert_eq!(
            p.late_credit(day(23)),
            Some(LateCredit {
                day: day(20),
                units: -123_000_000_000
            })
        );
        assert_eq!(
            p.late_credit(day(2)),
            Some(LateCredit {
                day: day(1),
                units: -102_000_000_000
            })
        );
        assert_eq!(p.late_credit(day(1)), None);
    }

    fn spec() -> DatasetSpec<'static> {
        DatasetSpec {
            seed: 5,
            accounts: &[("111111111111", "Payer"), ("222222222222", "Member")],
            today: day(24),
            history_days: 12,
            estimated_days: 2,
            scale: 1.0,
            idle_accounts: &[],
        }
    }

    #[test]
    fn a_published_dataset_is_the_base_scaled_by_day_with_its_credits() {
        let base = Dataset::generate(&spec());
        let p = Publications::default();
        let e = edition(23, 3);
        let published = p.publish(&base, e);
        assert_eq!(published.today, Some(day(23)));
        assert_eq!(published.estimated_from, Some(day(23)));
        assert_eq!(published.accounts, base.accounts);
        assert!(published.rows.is_sorted_by_key(|r| r.day));
        assert_eq!(published.rows.last().map(|r| r.day), Some(day(23)));
        let unblended =
            |d: &Dataset, day: NaiveDate| d.total_units(CostMetric::Unblended, |r| r.day == day);
        // Days up to the 21st whole, but for their credits.
        let credit_days: Vec<(NaiveDate, i64)> = (13..=23)
            .filter_map(|d| p.late_credit(day(d)))
            .filter(|c| c.day >= day(12))
            .map(|c| (c.day, c.units))
            .collect();
        assert_eq!(credit_days.len(), 9);
        assert_eq!(credit_days.first(), Some(&(day(12), -115_000_000_000)));
        for d in 12..=22 {
            let credits: i128 = credit_days
                .iter()
                .filter(|(c, _)| *c == day(d))
                .map(|(_, u)| i128::from(*u))
                .sum();
            assert_eq!(
                unblended(&published, day(d)),
                unblended(&base, day(d)) + credits,
                "{d}"
            );
        }
        // The 23rd at three fifths, row by row.
        let expected: i128 = base
            .day_rows(day(23), day(24))
            .iter()
            .map(|r| i128::from(r.amounts[0]) * 3 / 5)
            .sum();
        assert_eq!(unblended(&published, day(23)), expected);
        // The credit row is the first Credit row's, moved.
        let template = base
            .rows
            .iter()
            .find(|r| r.record_type() == "Credit")
            .unwrap();
        let credit = published
            .day_rows(day(20), day(21))
            .iter()
            .find(|r| r.amounts == [-123_000_000_000; 5])
            .unwrap();
        assert_eq!(credit.account_id(), template.account_id());
        assert_eq!(credit.service(), template.service());
        assert_eq!(credit.resource_id(), template.resource_id());
        assert_eq!(
            credit.tags().collect::<Vec<_>>(),
            template.tags().collect::<Vec<_>>()
        );
        // Before the day's credit publication, it is not there; the earlier ones are.
        let before = p.publish(&base, edition(23, 2));
        assert!(
            !before
                .day_rows(day(20), day(21))
                .iter()
                .any(|r| r.amounts == [-123_000_000_000; 5])
        );
        assert_eq!(
            unblended(&published, day(20)) - unblended(&before, day(20)),
            -123_000_000_000
        );
        // Deterministic; an empty dataset as given.
        assert_eq!(p.publish(&base, e), published);
        assert_eq!(p.publish(&Dataset::default(), e), Dataset::default());
    }
}
