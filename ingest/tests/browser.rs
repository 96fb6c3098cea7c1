//! Real-browser test of the reporting page: headless Chromium from Debian (install it with
//! `scripts/browser-deps.sh`) driven by playwright-core (`tests/browser/report.mjs`, installed
//! here with `npm ci` from the committed lock file when `node_modules` is missing). The page is
//! served by an in-process ingest on port 0 in front of a mock cluster; the test checks that the
//! clues the browser sent — online, queued offline with a photo then sent on reconnect, and
//! placed with the map fallback — are on the commands topic, each exactly once, and that the
//! offline clue's photo was stored.
//!
//! Set `GRIDCLUE_BROWSER_SHOTS=<dir>` to keep screenshots of each step.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use gridclue_core::wire::{Channel, Command, CommandEnvelope};
use gridclue_core::ClueId;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// The headless Chromium to drive, or `None` (with a message saying so) when it is not installed
/// and the run does not require it. `make test` installs it and sets `GRIDCLUE_REQUIRE_BROWSER=1`,
/// so there a missing browser fails the test instead of skipping it.
fn chromium() -> Option<String> {
    let path = std::env::var("GRIDCLUE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if Path::new(&path).exists() {
        return Some(path);
    }
    let help = format!(
        "headless Chromium is missing at {path}: run `scripts/browser-deps.sh` (Debian's \
         chromium and chromium-driver) or set GRIDCLUE_CHROMIUM"
    );
    assert!(
        std::env::var_os("GRIDCLUE_REQUIRE_BROWSER").is_none(),
        "{help} (GRIDCLUE_REQUIRE_BROWSER is set)"
    );
    eprintln!("SKIPPED the browser test: {help}");
    None
}

async fn ensure_node_modules() {
    let node = tokio::process::Command::new("node")
        .arg("--version")
        .output()
        .await;
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is required for the browser test (Node.js 20+ on PATH)"
    );
    let dir = browser_dir();
    if dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return;
    }
    let out = tokio::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .output()
        .await
        .expect("running npm ci");
    assert!(
        out.status.success(),
        "npm ci in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reporting_page_submits_queues_offline_and_sends_on_reconnect() {
    let Some(chromium) = chromium() else {
        return;
    };
    ensure_node_modules().await;
    let cluster = cluster(3);
    let bootstrap = cluster.bootstrap_servers();
    let env = Env::new("browser");
    let server = Server::start(env.config(&bootstrap)).await;

    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(browser_dir().join("report.mjs"))
        .arg(&server.url)
        .arg(&env.reporter)
        .env("GRIDCLUE_CHROMIUM", &chromium)
        .kill_on_drop(true);
    if let Ok(dir) = std::env::var("GRIDCLUE_BROWSER_SHOTS") {
        std::fs::create_dir_all(&dir).unwrap();
        cmd.arg(dir);
    }
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("the browser script finishes within 3 minutes")
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser script failed ({}):\n{}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: serde_json::Value = serde_json::from_str(stdout.trim()).expect("script result");
    let id = |k: &str| -> ClueId { sent[k].as_str().unwrap().parse().unwrap() };
    let (online, offline, pinned) = (id("online"), id("offline"), id("pinned"));

    let records = tokio::task::spawn_blocking(move || read_topic(&bootstrap, 3))
        .await
        .unwrap();
    // The page sends at least once (a send whose answer it did not get is sent again); every
    // copy of a clue is the same command, which the clue processor applies once.
    let mut by_clue: std::collections::BTreeMap<ClueId, Vec<&CommandEnvelope>> = Default::default();
    for (_, c) in &records {
        by_clue.entry(c.clue_id).or_default().push(c);
    }
    assert_eq!(by_clue.len(), 3, "three clues: {records:?}");
    for copies in by_clue.values() {
        assert!(
            copies
                .iter()
                .all(|c| c.command_id == copies[0].command_id && c.command == copies[0].command),
            "copies of one clue differ: {copies:?}"
        );
    }
    for (clue, category) in [
        (online, "manhole_cover"),
        (offline, "garbage_pile"),
        (pinned, "street_light"),
    ] {
        let (_, c) = records
            .iter()
            .find(|(_, c)| c.clue_id == clue)
            .unwrap_or_else(|| panic!("{clue} is on the topic"));
        assert_eq!(c.actor.id, env.reporter_id);
        let Command::Report(r) = &c.command else {
            panic!("not a report")
        };
        assert_eq!(r.channel, Channel::Web);
        assert_eq!(r.category.as_str(), category);
        if clue == offline {
            let photo = sent["offline_photo"].as_str().unwrap();
            assert_eq!(r.photos, vec![photo.to_owned()]);
            let stored = env
                .dir
                .join("photos/photos")
                .join(&photo["sha256:".len()..]);
            let bytes = std::fs::read(&stored).expect("the photo is in the store");
            assert!(bytes.starts_with(&[0xFF, 0xD8]), "a JPEG");
        }
        if clue == pinned {
            // The middle of the district's box.
            assert!((r.location.lat() - 31.199).abs() < 0.01, "{:?}", r.location);
            assert!(
                (r.location.lon() - 121.501).abs() < 0.01,
                "{:?}",
                r.location
            );
        }
    }
    server.stop().await.unwrap();
    drop(cluster);
}
