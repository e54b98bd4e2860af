//! `--config.watch-interval`: the binary reloads `--config.file` by itself when its content
//! changes, as SIGHUP does, across the kubelet's atomic symlink swap of a ConfigMap volume, a
//! plain in-place write and an editor's rename; bad files, identical content and bursts.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aws_cost_simulator::Simulator;
use common::running::Running;
use common::*;

const SOLO_KEY: (&str, &str) = ("AKIATESTSOLO1EXAMPLE", "solo-secret");

/// A directory laid out and updated as the kubelet's AtomicWriter does a ConfigMap volume:
/// `..<timestamp>/config.yaml` holds the bytes, `..data -> ..<timestamp>` and
/// `config.yaml -> ..data/config.yaml`.
struct ConfigMapVolume {
    dir: PathBuf,
    current: String,
    generation: u32,
}

impl ConfigMapVolume {
    fn new(name: &str, text: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("ace-config-watch-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let current = Self::timestamped(0);
        std::fs::create_dir(dir.join(&current)).unwrap();
        std::fs::write(dir.join(&current).join("config.yaml"), text).unwrap();
        std::os::unix::fs::symlink(&current, dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/config.yaml", dir.join("config.yaml")).unwrap();
        ConfigMapVolume {
            dir,
            current,
            generation: 0,
        }
    }

    /// The kubelet's timestamped directory name (`..2006_01_02_15_04_05.` and a random suffix).
    fn timestamped(generation: u32) -> String {
        format!(
            "..2026_12_05_10_00_{generation:02}.{:09}",
            123_456_789 + generation
        )
    }

    /// The path the exporter is given.
    fn file(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    /// An update as the kubelet makes it: a new timestamped directory with the new bytes, a
    /// new `..data_tmp` symlink to it renamed over `..data` (atomically), the old directory
    /// removed. `config.yaml` itself is never touched.
    fn update(&mut self, text: &str) {
        self.generation += 1;
        let next = Self::timestamped(self.generation);
        std::fs::create_dir(self.dir.join(&next)).unwrap();
        std::fs::write(self.dir.join(&next).join("config.yaml"), text).unwrap();
        std::os::unix::fs::symlink(&next, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        std::fs::remove_dir_all(self.dir.join(&self.current)).unwrap();
        self.current = next;
        assert_eq!(std::fs::read_to_string(self.file()).unwrap(), text);
    }
}

impl Drop for ConfigMapVolume {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn simulator() -> Simulator {
    let today = chrono::Utc::now().date_naive();
    Simulator::builder()
        .account("111111111111", org_dataset(today, 3))
        .access_key(PAYER_KEY.0, PAYER_KEY.1, "111111111111")
        .account("222222222222", single_dataset("222222222222", today, 5))
        .access_key(SOLO_KEY.0, SOLO_KEY.1, "222222222222")
        .start()
        .await
        .unwrap()
}

fn payer(sim: &Simulator) -> String {
    format!(
        "  - name: payer\n    account_id: \"111111111111\"\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {}\n",
        PAYER_KEY.0,
        PAYER_KEY.1,
        sim.endpoint()
    )
}

fn solo(sim: &Simulator) -> String {
    format!(
        "  - name: solo\n    account_id: \"222222222222\"\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {}\n",
        SOLO_KEY.0,
        SOLO_KEY.1,
        sim.endpoint()
    )
}

/// Fails validation at line 3 column 17.
const BAD: &str = "integrations:\n  - name: solo\n    account_id: \"1\"\n";

/// Starts the binary on `file`, watching every `interval` (as `--config.watch-interval`
/// spells it), and waits for the named integrations' first refresh.
async fn start(file: &Path, interval: &str, integrations: &[&str]) -> (Running, SocketAddr) {
    let mut exporter = Running::start(&[
        "--config.file",
        &file.to_string_lossy(),
        "--web.listen-address",
        "127.0.0.1:0",
        &format!("--config.watch-interval={interval}"),
    ]);
    let addr = exporter.address();
    wait_for_refresh(addr, integrations).await;
    (exporter, addr)
}

/// Every `integration` label value on the page, but the request counters' (which a removed
/// integration keeps: counters only grow).
fn integrations(samples: &[Sample]) -> BTreeSet<String> {
    samples
        .iter()
        .filter(|s| !s.name.ends_with("_total"))
        .map(|s| s.label("integration").to_string())
        .filter(|i| !i.is_empty())
        .collect()
}

/// The cost series of the page, as written, in order.
fn cost_lines(page: &str) -> Vec<String> {
    page.lines()
        .filter(|l| {
            l.starts_with("aws_cost_daily_usd{") || l.starts_with("aws_cost_month_to_date_usd{")
        })
        .map(str::to_string)
        .collect()
}

/// The log line's `key` field is `value`.
#[track_caller]
fn assert_field(line: &str, key: &str, value: &str) {
    assert_eq!(
        logfmt_field(line, key).as_deref(),
        Some(value),
        "{key} in {line}"
    );
}

fn reload_successful(samples: &[Sample]) -> Option<f64> {
    value_of(
        samples,
        "aws_cost_exporter_config_last_reload_successful",
        &[],
    )
}

fn is_reloaded(line: &str) -> bool {
    line.contains(" msg=\"configuration reloaded\"")
}

fn is_changed(line: &str) -> bool {
    line.contains(" msg=\"configuration file changed; reloading\"")
}

fn is_failed(line: &str) -> bool {
    line.contains(" msg=\"configuration reload failed; keeping the running configuration\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_configmap_swap_is_reloaded_and_served() {
    let sim = simulator().await;
    let mut volume = ConfigMapVolume::new("swap", &format!("integrations:\n{}", payer(&sim)));
    let (mut exporter, addr) = start(&volume.file(), "100ms", &["payer"]).await;
    let watching = exporter
        .wait_for_line(|l| l.contains(" msg=\"watching the configuration file for changes\""));
    assert_field(&watching, "file", volume.file().to_string_lossy().as_ref());
    assert_field(&watching, "interval", "100ms");

    // An integration added.
    volume.update(&format!("integrations:\n{}{}", payer(&sim), solo(&sim)));
    let changed = exporter.wait_for_line(is_changed);
    assert_field(&changed, "file", volume.file().to_string_lossy().as_ref());
    let line = exporter.wait_for_line(is_reloaded);
    assert_field(&line, "added", "solo");
    assert_field(&line, "unchanged", "payer");
    let samples = wait_for_refresh(addr, &["solo"]).await;
    assert_eq!(
        integrations(&samples),
        BTreeSet::from(["payer".to_string(), "solo".to_string()])
    );
    assert_eq!(refresh_success(&samples, "solo"), Some(1.0));
    assert_eq!(refresh_success(&samples, "payer"), Some(1.0));
    assert_eq!(reload_successful(&samples), Some(1.0));

    // An integration removed: none of its series is left.
    volume.update(&format!("integrations:\n{}", solo(&sim)));
    let line = exporter.wait_for_line(is_reloaded);
    assert_field(&line, "removed", "payer");
    assert_field(&line, "unchanged", "solo");
    let samples = parse_exposition(&get(addr, "/metrics").await.text());
    assert_eq!(integrations(&samples), BTreeSet::from(["solo".to_string()]));
    assert_eq!(exporter.count(is_changed), 2);
    assert_eq!(exporter.count(is_reloaded), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_swapped_in_keeps_the_running_configuration_and_is_counted() {
    let sim = simulator().await;
    let mut volume = ConfigMapVolume::new("bad", &format!("integrations:\n{}", payer(&sim)));
    let (mut exporter, addr) = start(&volume.file(), "100ms", &["payer"]).await;
    let before = get(addr, "/metrics").await.text();
    let billed = sim.billed_requests();
    let loaded_at = value_of(
        &parse_exposition(&before),
        "aws_cost_exporter_config_last_reload_success_timestamp_seconds",
        &[],
    );
    assert!(loaded_at.is_some_and(|t| t > 0.0), "{loaded_at:?}");

    volume.update(BAD);
    let line = exporter.wait_for_line(is_failed);
    assert!(
        line.contains(&format!(
            "invalid configuration {} at line 3 column 17: integrations[0].account_id",
            volume.file().display()
        )),
        "{line}"
    );
    let samples = wait_for(addr, "the failed reload", |s| {
        reload_successful(s) == Some(0.0)
    })
    .await;
    // The running configuration stays: payer, byte for byte, nothing bought.
    assert_eq!(
        integrations(&samples),
        BTreeSet::from(["payer".to_string()])
    );
    assert_eq!(refresh_success(&samples, "payer"), Some(1.0));
    assert_eq!(
        value_of(
            &samples,
            "aws_cost_exporter_config_last_reload_success_timestamp_seconds",
            &[]
        ),
        loaded_at
    );
    assert_eq!(
        cost_lines(&get(addr, "/metrics").await.text()),
        cost_lines(&before)
    );
    assert_eq!(sim.billed_requests(), billed);
    // The refused file is not tried again while it stays as it is.
    exporter.read_for(Duration::from_millis(1000));
    assert_eq!(exporter.count(is_failed), 1);
    assert_eq!(exporter.count(is_changed), 1);
    assert_eq!(exporter.count(is_reloaded), 0);

    // A good file again: reloaded, and the failure is over.
    volume.update(&format!("integrations:\n{}{}", payer(&sim), solo(&sim)));
    let line = exporter.wait_for_line(is_reloaded);
    assert_field(&line, "added", "solo");
    assert_field(&line, "unchanged", "payer");
    let samples = wait_for_refresh(addr, &["solo"]).await;
    assert_eq!(reload_successful(&samples), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_to_the_same_content_reloads_nothing_and_buys_nothing() {
    let sim = simulator().await;
    let text = format!("integrations:\n{}", payer(&sim));
    let mut volume = ConfigMapVolume::new("same", &text);
    let (mut exporter, addr) = start(&volume.file(), "100ms", &["payer"]).await;
    let before = parse_exposition(&get(addr, "/metrics").await.text());
    let loaded_at = value_of(
        &before,
        "aws_cost_exporter_config_last_reload_success_timestamp_seconds",
        &[],
    );
    let billed = sim.billed_requests();
    assert!(billed > 0);

    // Three swaps to the same bytes, each watched for ten intervals.
    for _ in 0..3 {
        volume.update(&text);
        exporter.read_for(Duration::from_millis(1000));
    }
    assert_eq!(exporter.count(is_changed), 0);
    assert_eq!(exporter.count(is_reloaded), 0);
    assert_eq!(sim.billed_requests(), billed);
    let after = parse_exposition(&get(addr, "/metrics").await.text());
    assert_eq!(
        value_of(
            &after,
            "aws_cost_exporter_config_last_reload_success_timestamp_seconds",
            &[]
        ),
        loaded_at
    );

    // The watch is alive all the same: a real change is the first reload.
    volume.update(&format!("integrations:\n{}{}", payer(&sim), solo(&sim)));
    let line = exporter.wait_for_line(is_reloaded);
    assert_field(&line, "added", "solo");
    assert_eq!(exporter.count(is_reloaded), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_quick_swaps_are_one_reload_of_the_last() {
    let sim = simulator().await;
    let mut volume = ConfigMapVolume::new("burst", &format!("integrations:\n{}", payer(&sim)));
    let (mut exporter, addr) = start(&volume.file(), "300ms", &["payer"]).await;

    // Five swaps 100 ms apart: the burst outlasts an interval, so a read lands inside it.
    let burst = [
        format!("integrations:\n{}", solo(&sim)),
        BAD.to_string(),
        format!("# 3\nintegrations:\n{}", payer(&sim)),
        format!("integrations:\n{}{}", payer(&sim), solo(&sim)),
        format!("integrations:\n{}{}", solo(&sim), payer(&sim)),
    ];
    for (i, text) in burst.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        volume.update(text);
    }
    let line = exporter.wait_for_line(is_reloaded);
    assert_field(&line, "added", "solo");
    assert_field(&line, "removed", "");
    assert_field(&line, "unchanged", "payer");
    // Ten more intervals: nothing else.
    exporter.read_for(Duration::from_millis(3000));
    assert_eq!(exporter.count(is_changed), 1);
    assert_eq!(exporter.count(is_reloaded), 1);
    assert_eq!(exporter.count(is_failed), 0);
    let samples = wait_for_refresh(addr, &["solo"]).await;
    assert_eq!(
        integrations(&samples),
        BTreeSet::from(["payer".to_string(), "solo".to_string()])
    );
    assert_eq!(reload_successful(&samples), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_writes_and_editor_renames_are_reloaded_and_sighup_is_not_repeated() {
    let sim = simulator().await;
    let dir = std::env::temp_dir().join(format!("ace-config-watch-{}-plain", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("aws-cost-exporter.yaml");
    std::fs::write(&file, format!("integrations:\n{}", payer(&sim))).unwrap();
    // Long enough that SIGHUP, sent right after the write below, comes before the watch has
    // read the change twice.
    let (mut exporter, _addr) = start(&file, "500ms", &["payer"]).await;

    // In place: the same inode, truncated and written.
    std::fs::write(
        &file,
        format!("integrations:\n{}{}", payer(&sim), solo(&sim)),
    )
    .unwrap();
    let line = exporter.wait_for_line(is_reloaded);
    assert_field(&line, "added", "solo");

    // As editors save: a new file renamed over the old one.
    let temporary = dir.join(".aws-cost-exporter.yaml.swp");
    std::fs::write(&temporary, format!("integrations:\n{}", solo(&sim))).unwrap();
    std::fs::rename(&temporary, &file).unwrap();
    let line = exporter.wait_for_line(is_reloaded);
    assert_field(&line, "removed", "payer");

    // A change reloaded by SIGHUP is not reloaded again by the watch.
    std::fs::write(
        &file,
        format!("integrations:\n{}{}", solo(&sim), payer(&sim)),
    )
    .unwrap();
    exporter.hangup();
    let line = exporter.wait_for_line(is_reloaded);
    assert_field(&line, "added", "payer");
    exporter.read_for(Duration::from_millis(2000));
    assert_eq!(exporter.count(is_reloaded), 3);
    assert_eq!(exporter.count(is_changed), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_interval_turns_watching_off() {
    let sim = simulator().await;
    let mut volume = ConfigMapVolume::new("off", &format!("integrations:\n{}", payer(&sim)));
    let (mut exporter, _addr) = start(&volume.file(), "0", &["payer"]).await;
    volume.update(&format!("integrations:\n{}{}", payer(&sim), solo(&sim)));
    exporter.read_for(Duration::from_millis(1500));
    assert_eq!(exporter.count(is_changed), 0);
    assert_eq!(exporter.count(is_reloaded), 0);
    assert_eq!(
        exporter.count(|l| l.contains("watching the configuration file")),
        0
    );
    // The swapped file is there to be read: SIGHUP still reloads it.
    exporter.hangup();
    let line = exporter.wait_for_line(is_reloaded);
    assert_field(&line, "added", "solo");

    let out = Command::new(common::running::BIN)
        .args(["--config.watch-interval=soon", "--config.check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "invalid value 'soon' for '--config.watch-interval <DURATION>': expected a duration such as 10s or 1m, or 0 for off"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
