//! A flood of scrapes never holds a refresh back, and a refresh never delays a scrape: loopback
//! scrapers at normal priority scrape `/metrics` back to back, enough to keep both cores busy,
//! while a simulated organization's refresh runs on the refresh threads (nice 10). The refresh
//! must complete while the flood still runs (the flood is bounded, so that a refresh starved
//! until it ends fails the test: at nice 19 it does), every scrape must succeed with a complete
//! page that is either the one before the refresh or the one after it, and scrapes must keep
//! being answered all through the refresh.
//!
//! Alone in its test binary, so that no other test competes for the CPU.

mod common;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_cost_exporter::parts::FAMILIES;
use aws_cost_simulator::Simulator;
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// Scraper threads, each with `CONNECTIONS` keep-alive connections scraping at once (as
/// `wrk -t2 -c8`), each checking every page it gets: with the server's two workers and the
/// simulated AWS, more busy threads at nice 0 than the machine's two cores.
const SCRAPERS: usize = 2;
const CONNECTIONS: usize = 4;
/// The most scrapes a connection makes, the flood's bound: 512 in all. How many scrapes a
/// refresh lets through hardly depends on how busy the machine is otherwise: the scrapers (at
/// nice 0) and the refresh threads get their shares of a core by weight (1024 and 110) whatever
/// else runs. On 2 cores (debug build), a refresh at nice 10 completed after 80 to 205 of them
/// (0.8 to 3.7 s, 2 to 9 times its time alone); at nice 19 it needed 600 to 1,050, and this test
/// fails.
const MAX_SCRAPES: usize = 64;
/// Accounts of the simulated organization: about 4,000 cost series (one cost basis), 0.8 MB of
/// page per integration, a refresh of about 0.15 s of CPU (0.3 to 0.4 s alone) in a debug
/// build.
const ACCOUNTS: usize = 120;

/// One scrape, as a scraper saw it.
struct Scrape {
    start: Instant,
    end: Instant,
    /// The page's cost series, or why it was not a complete page.
    costs: Result<Costs, String>,
}

/// A page's cost series of each integration, hashed in order (`None`: none served yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Costs {
    resident: Option<u64>,
    added: Option<u64>,
}

/// The page's cost series, or why the page is not a complete one: every page ends with a
/// newline and has the exporter's own lines.
fn cost_series(body: &[u8]) -> Result<Costs, String> {
    let text = std::str::from_utf8(body).map_err(|err| format!("not UTF-8: {err}"))?;
    if !text.ends_with('\n') || !text.contains("\naws_cost_exporter_build_info{") {
        return Err(format!("an incomplete page of {} bytes", body.len()));
    }
    let mut hashers = [DefaultHasher::new(), DefaultHasher::new()];
    let mut lines = [0; 2];
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        if !FAMILIES.iter().any(|f| f.name == name) {
            continue;
        }
        let i = match () {
            _ if line.contains("integration=\"resident\"") => 0,
            _ if line.contains("integration=\"added\"") => 1,
            _ => return Err(format!("a series of no integration: {line}")),
        };
        line.hash(&mut hashers[i]);
        lines[i] += 1;
    }
    let [resident, added] = hashers.map(|h| h.finish());
    Ok(Costs {
        resident: (lines[0] > 0).then_some(resident),
        added: (lines[1] > 0).then_some(added),
    })
}

/// Scrapes `/metrics` over `CONNECTIONS` keep-alive connections at once until `done` or
/// `MAX_SCRAPES` each; a new connection when one fails. The scrapes of each connection.
fn scraper(addr: SocketAddr, done: Arc<AtomicBool>, count: Arc<AtomicUsize>) -> Vec<Vec<Scrape>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let connections: Vec<_> = (0..CONNECTIONS)
            .map(|_| tokio::spawn(connection(addr, done.clone(), count.clone())))
            .collect();
        let mut scrapes = Vec::new();
        for connection in connections {
            scrapes.push(connection.await.unwrap());
        }
        scrapes
    })
}

/// One connection's scrapes, back to back.
async fn connection(
    addr: SocketAddr,
    done: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
) -> Vec<Scrape> {
    let mut scrapes = Vec::new();
    let mut sender = None;
    while scrapes.len() < MAX_SCRAPES && !done.load(Ordering::SeqCst) {
        let start = Instant::now();
        let s = match sender.as_mut() {
            Some(s) => s,
            None => {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (s, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
                tokio::spawn(connection);
                sender.insert(s)
            }
        };
        let request = http::Request::get("/metrics")
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())
            .unwrap();
        let answer = match s.send_request(request).await {
            Ok(response) => {
                let status = response.status();
                match response.into_body().collect().await {
                    Ok(body) if status == 200 => Ok(body.to_bytes()),
                    Ok(_) => Err(format!("status {status}")),
                    Err(err) => Err(format!("reading the body: {err}")),
                }
            }
            Err(err) => Err(format!("sending: {err}")),
        };
        // The scrape's time is the server's and the transfer's, not the checking's.
        let end = Instant::now();
        let costs = answer.and_then(|body| cost_series(&body));
        if costs.is_err() {
            sender = None;
        }
        if matches!(costs, Ok(Costs { added: Some(_), .. })) {
            // The refresh's data is served: the flood stops.
            done.store(true, Ordering::SeqCst);
        }
        scrapes.push(Scrape { start, end, costs });
        count.fetch_add(1, Ordering::SeqCst);
    }
    scrapes
}

/// An integration of the simulated organization, named `name`.
fn integration(name: &str, sim: &Simulator) -> String {
    format!(
        "  - name: {name}\n    account_id: \"111111111111\"\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {}\n    forecast: false\n",
        PAYER_KEY.0,
        PAYER_KEY.1,
        sim.endpoint()
    )
}

/// `resident` is refreshed and served before the flood (every scrape carries its series, so
/// that serving one is real work); `added` comes with a reload once the flood is on, and its
/// first refresh runs under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_scrapes_neither_holds_back_a_refresh_nor_waits_for_it() {
    let today = date(2026, 11, 23);
    // The simulated AWS on a runtime of its own, as another machine would be.
    let aws = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (organization, _) = aws_cost_simulator::demo_datasets(today, ACCOUNTS);
    let sim = aws
        .spawn(
            Simulator::builder()
                .account("111111111111", organization)
                .access_key(PAYER_KEY.0, PAYER_KEY.1, "111111111111")
                .page_size(500)
                .start(),
        )
        .await
        .unwrap()
        .unwrap();
    let resident = integration("resident", &sim);
    let mut exporter = start_exporter(
        parse_config(&format!("refresh_interval: 1h\nintegrations:\n{resident}")),
        today,
    )
    .await;
    let addr = exporter.local_addr();
    let samples = wait_for_refresh(addr, &["resident"]).await;
    assert_eq!(refresh_success(&samples, "resident"), Some(1.0));
    let alone = refresh_duration(&samples, "resident");
    let before = cost_series(&get(addr, "/metrics").await.body).unwrap();
    assert!(before.resident.is_some() && before.added.is_none());

    // The flood: every connection under way before the refresh starts.
    let deadline = Instant::now() + WAIT;
    let done = Arc::new(AtomicBool::new(false));
    let counts: Vec<Arc<AtomicUsize>> = (0..SCRAPERS)
        .map(|_| Arc::new(AtomicUsize::new(0)))
        .collect();
    let scrapers: Vec<_> = counts
        .iter()
        .map(|count| {
            let (done, count) = (done.clone(), count.clone());
            std::thread::spawn(move || scraper(addr, done, count))
        })
        .collect();
    while counts
        .iter()
        .any(|c| c.load(Ordering::SeqCst) < 2 * CONNECTIONS)
    {
        assert!(Instant::now() < deadline, "every scraper scrapes");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let released = Instant::now();
    let cpu_before = refresh_cpu();
    let summary = exporter
        .reload(parse_config(&format!(
            "refresh_interval: 1h\nintegrations:\n{resident}{}",
            integration("added", &sim)
        )))
        .await;
    assert_eq!(summary.added, ["added"]);
    let mut scrapes: Vec<Vec<Scrape>> = Vec::new();
    for scraper in scrapers {
        scrapes.extend(
            tokio::task::spawn_blocking(move || scraper.join().unwrap())
                .await
                .unwrap(),
        );
    }
    let cpu = refresh_cpu() - cpu_before;

    // Once the flood is over: the refreshed page, checked against its own counts.
    let samples = wait_for_refresh(addr, &["added"]).await;
    let flooded = refresh_duration(&samples, "added");
    // The refresh completed while the flood was on: every connection stopped because the new
    // data was served, none because it had made all its scrapes.
    let made: Vec<usize> = scrapes.iter().map(Vec::len).collect();
    assert!(
        made.iter().all(|&n| n < MAX_SCRAPES),
        "connections made all their {MAX_SCRAPES} scrapes before the refresh completed: \
         {made:?}; refresh alone {alone:?}, this one {flooded:?}"
    );
    let page = get(addr, "/metrics").await;
    assert_eq!(page.status, 200);
    let after = cost_series(&page.body).unwrap();
    assert_eq!(after.resident, before.resident);
    assert!(after.added.is_some());
    let samples = parse_exposition(&page.text());
    assert_eq!(refresh_success(&samples, "added"), Some(1.0));
    let mut checked = 0;
    for declared in samples
        .iter()
        .filter(|s| s.name == "aws_cost_series" && s.label("integration") == "added")
    {
        let metric = declared.label("metric");
        let served = samples
            .iter()
            .filter(|s| s.name == metric && s.label("integration") == "added")
            .count();
        assert_eq!(served as f64, declared.value, "{metric}");
        checked += served;
    }
    assert!(checked > 3000, "{checked} cost series");
    let dataset = sim.dataset("111111111111").unwrap();
    let daily: f64 = samples
        .iter()
        .filter(|s| {
            s.name == "aws_cost_daily_usd"
                && s.label("integration") == "added"
                && s.label("cost_basis") == "unblended"
        })
        .map(|s| s.value)
        .sum();
    assert_close(
        daily,
        dataset.total(aws_cost_simulator::CostMetric::Unblended, |r| {
            r.day == date(2026, 11, 22)
        }),
        "the data day's cost",
    );

    // Every scrape succeeded with a complete page: the one before the refresh or the one after.
    let all: Vec<&Scrape> = scrapes.iter().flatten().collect();
    for scrape in &all {
        match &scrape.costs {
            Ok(costs) => assert!(
                *costs == before || *costs == after,
                "a page of neither snapshot: {costs:?}"
            ),
            Err(err) => panic!("a failed scrape: {err}"),
        }
    }
    let published = all
        .iter()
        .filter(|s| matches!(s.costs, Ok(c) if c == after))
        .map(|s| s.end)
        .min()
        .expect("a scrape saw the refresh's data");
    let refresh = published - released;
    // No scrape waited for the refresh: the old page kept being served all through it (at
    // least two scrapes a connection), no scrape took half as long as the refresh, and the
    // answers never paused that long.
    let during: Vec<&&Scrape> = all
        .iter()
        .filter(|s| s.start >= released && s.end <= published)
        .collect();
    let longest = all.iter().map(|s| s.end - s.start).max().unwrap();
    let mut ends: Vec<Instant> = during.iter().map(|s| s.end).collect();
    ends.push(released);
    ends.push(published);
    ends.sort();
    let gap = ends.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    eprintln!(
        "refresh of {checked} series alone {alone:?}, under the flood {flooded:?} (its page \
         of {} bytes served {refresh:?} after the reload; {cpu:?} of CPU on the refresh \
         threads); {} scrapes in all, {} during the refresh; longest scrape {longest:?}, longest \
         pause between answers {gap:?}",
        page.body.len(),
        all.len(),
        during.len()
    );
    assert!(
        during.len() >= 2 * SCRAPERS * CONNECTIONS,
        "{} scrapes during the refresh",
        during.len()
    );
    assert!(
        longest < refresh / 2 && gap < refresh / 2,
        "a scrape of {longest:?} or a pause of {gap:?} in a refresh of {refresh:?}"
    );
    exporter.shutdown().await;
    drop(sim);
    aws.shutdown_background();
}

/// `aws_cost_refresh_duration_seconds` of `integration`.
fn refresh_duration(samples: &[Sample], integration: &str) -> Duration {
    let seconds = value_of(
        samples,
        "aws_cost_refresh_duration_seconds",
        &[("integration", integration)],
    )
    .unwrap_or_else(|| panic!("no refresh duration of {integration}"));
    Duration::from_secs_f64(seconds)
}

/// The CPU time the refresh runtime's threads (`aws-cost-refresh`) have used so far, from
/// /proc (zero elsewhere). Threads that ended are not counted.
fn refresh_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let mut ticks = 0u64;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("aws-cost-refres") {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        // utime and stime, fields 14 and 15 of stat, in clock ticks.
        ticks += fields
            .get(11)
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0);
        ticks += fields
            .get(12)
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0);
    }
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}
