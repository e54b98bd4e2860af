//! What the list of parts promises, checked for every part in it: a reload that turns a part
//! off removes every series it owned and its `aws_cost_query_success` at once, serves the
//! other parts' series unchanged and buys nothing; a reload that turns it back on fetches it
//! (alone, when it needs neither costs nor their rows) and serves exactly what it served
//! before. A reload that changes no part's settings buys nothing until a refresh is due, unless
//! the last attempt failed. The exporter runs on 127.0.0.1:0 against the simulated AWS through
//! the real SDK.

mod common;

use std::time::Duration;

use aws_cost_exporter::parts::{Kind, PARTS};
use aws_cost_exporter::{Exporter, ExporterOptions};
use aws_cost_simulator::{Behavior, DEMO_SCALE, demo_simulator};
use chrono::{TimeDelta, TimeZone as _, Utc};
use common::parts::*;
use common::*;

#[tokio::test]
async fn each_part_turned_off_by_a_reload_goes_at_once_and_comes_back_when_turned_on() {
    let today = date(2026, 11, 23);
    let sim = demo_simulator(today, DEMO_SCALE).start().await.unwrap();
    let full = full_config(&sim.endpoint());
    let mut exporter = start_exporter(parse_config(&full), today).await;
    let addr = exporter.local_addr();
    let samples = wait_for_refresh(addr, &["payer"]).await;
    assert_eq!(refresh_success(&samples, "payer"), Some(1.0));
    let initial = get(addr, "/metrics").await.text();
    let native = parse_config(&full);
    for part in &PARTS {
        if NOT_NATIVE.contains(&part.name) {
            assert!(!(part.enabled)(&native.integrations[0]), "{}", part.name);
            assert_eq!(query_success(&samples, part.name), None, "{}", part.name);
            continue;
        }
        assert_eq!(
            query_success(&samples, part.name),
            Some(1.0),
            "{}",
            part.name
        );
        assert_eq!(
            lines_of(&initial, part).is_empty(),
            part.families.is_empty(),
            "{} serves its families",
            part.name
        );
    }

    let optional: Vec<&Kind> = PARTS
        .iter()
        .filter(|part| !part.required && !NOT_NATIVE.contains(&part.name))
        .collect();
    assert_eq!(
        optional.iter().map(|p| p.name).collect::<Vec<_>>(),
        OFF.iter().map(|(name, _, _)| *name).collect::<Vec<_>>(),
        "the test turns off every optional part of the list"
    );
    for (name, line, replacement) in OFF {
        let part = PARTS.iter().find(|p| p.name == *name).unwrap();
        assert!(full.contains(line), "{name}");
        let off_text = full.replace(line, replacement);
        let (on, off) = (parse_config(&full), parse_config(&off_text));
        assert!(!(part.enabled)(&off.integrations[0]), "{name} is off");

        // Off: its series and its query_success go at once; the other parts whose settings
        // did not change keep serving theirs, byte for byte.
        let before = sim.requests().len();
        let summary = exporter.reload(off.clone()).await;
        assert_eq!(summary.changed, vec!["payer"], "{name}");
        let page = get(addr, "/metrics").await.text();
        let samples = parse_exposition(&page);
        assert!(lines_of(&page, part).is_empty(), "{name}: {page}");
        assert_eq!(query_success(&samples, name), None, "{name}");
        let enabled = PARTS
            .iter()
            .filter(|p| (p.enabled)(&on.integrations[0]))
            .count();
        let kept: Vec<&Kind> = PARTS
            .iter()
            .filter(|p| p.name != *name && (p.enabled)(&on.integrations[0]))
            .filter(|p| unchanged(p, &on, &off))
            .collect();
        for other in &kept {
            assert_eq!(
                lines_of(&page, other),
                lines_of(&initial, other),
                "{name} off: {} unchanged",
                other.name
            );
            assert_eq!(query_success(&samples, other.name), Some(1.0), "{name}");
        }
        if kept.len() == enabled - 1 {
            // Nothing else changed: nothing is owed, nothing is bought.
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(sim.requests().len(), before, "{name} off buys nothing");
        } else {
            // Its settings shape the others' series (Organizations names the accounts):
            // those are fetched again at once.
            let changed: Vec<&Kind> = PARTS
                .iter()
                .filter(|p| (p.enabled)(&off.integrations[0]) && !unchanged(p, &on, &off))
                .collect();
            for other in &changed {
                assert!(
                    lines_of(&page, other).is_empty(),
                    "{name} off: {}",
                    other.name
                );
            }
            wait_for(addr, "the changed parts fetched again", |s| {
                changed.iter().all(|p| serves(s, p)) && refresh_success(s, "payer") == Some(1.0)
            })
            .await;
        }

        // On again: fetched at once (alone when it can be), and the same series as before.
        let before = sim.requests().len();
        let summary = exporter.reload(on.clone()).await;
        assert_eq!(summary.changed, vec!["payer"], "{name}");
        // Published once every part serves again.
        wait_for(addr, "every part serving again", |s| {
            PARTS
                .iter()
                .filter(|p| (p.enabled)(&on.integrations[0]))
                .all(|p| query_success(s, p.name) == Some(1.0) && serves(s, p))
        })
        .await;
        let page = get(addr, "/metrics").await.text();
        assert_eq!(
            alone(name).is_some(),
            !part.needs_cost_rows && unchanged(&PARTS[0], &on, &off),
            "{name} runs alone exactly when it needs neither costs nor their rows"
        );
        check_back(name, &page, &initial, &sim.requests()[before..]);
    }
    exporter.shutdown().await;
}

/// A reload that changes no part's settings (here the interval) keeps every series and buys
/// nothing until the next refresh is due; but when the integration's last attempt failed, the
/// new task retries at once rather than a whole interval after its last good data.
#[tokio::test]
async fn a_reload_of_other_settings_waits_for_the_due_refresh_unless_the_last_attempt_failed() {
    let today = date(2026, 11, 23);
    let sim = org_simulator(today, 500).await;
    let config = |interval: &str| {
        parse_config(&format!(
            "refresh_interval: {interval}\nintegrations:\n  - name: payer\n    account_id: \"111111111111\"\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {}\n    tags: [team]\n",
            PAYER_KEY.0,
            PAYER_KEY.1,
            sim.endpoint()
        ))
    };
    let noon = Utc.from_utc_datetime(&today.and_hms_opt(12, 0, 0).unwrap());
    let clock = TestClock::at(noon);
    let mut exporter = Exporter::start(
        config("6h"),
        ExporterOptions {
            listen_address: "127.0.0.1:0".into(),
            clock: clock.clock(),
            refresh: test_refresh_options(),
            ..ExporterOptions::default()
        },
    )
    .await
    .unwrap();
    let addr = exporter.local_addr();
    let samples = wait_for_refresh(addr, &["payer"]).await;
    assert_eq!(refresh_success(&samples, "payer"), Some(1.0));
    let page = get(addr, "/metrics").await.text();
    let before = sim.requests().len();

    // Another interval: every part is carried over, nothing is bought.
    let summary = exporter.reload(config("5h")).await;
    assert_eq!(summary.changed, vec!["payer"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sim.requests().len(), before, "nothing bought");
    let again = get(addr, "/metrics").await.text();
    for part in &PARTS {
        assert_eq!(
            lines_of(&again, part),
            lines_of(&page, part),
            "{}",
            part.name
        );
    }

    // A short interval, past: the next refresh is due at once, and fails (access denied).
    sim.set_behavior("111111111111", Behavior::AccessDenied);
    clock.set(noon + TimeDelta::seconds(3));
    exporter.reload(config("2s")).await;
    wait_for(addr, "a failed refresh", |s| {
        refresh_success(s, "payer") == Some(0.0)
    })
    .await;
    // Fixed, and reloaded with a long interval: the failing integration retries at once.
    sim.set_behavior("111111111111", Behavior::Normal);
    let before = sim.requests().len();
    exporter.reload(config("6h")).await;
    wait_for(addr, "the retry", |s| {
        refresh_success(s, "payer") == Some(1.0)
    })
    .await;
    assert!(sim.requests().len() > before, "a refresh was bought");
    exporter.shutdown().await;
}
