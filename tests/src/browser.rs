//! Headless Chromium for the tests that drive a page in a real browser (the dashboard, the
//! reporting page): Debian's `chromium` (install it with `scripts/browser-deps.sh`), driven by
//! playwright-core scripts whose `node_modules` are installed with `npm ci` from the committed
//! lock file when missing.

use std::path::{Path, PathBuf};

/// The headless Chromium to drive (`GRIDCLUE_CHROMIUM`, else `/usr/bin/chromium`), or `None`
/// when it is not installed and the run does not require it: then the test named `test` says
/// SKIPPED and why, and returns. `make test` installs the browser and sets
/// `GRIDCLUE_REQUIRE_BROWSER=1`, so there a missing browser fails the test instead.
pub fn chromium(test: &str) -> Option<String> {
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
    eprintln!("SKIPPED {test}: {help}");
    None
}

/// Node.js is on PATH and the browser scripts in `dir` have their `node_modules`.
pub async fn ensure_node_modules(dir: &Path) {
    let node = tokio::process::Command::new("node")
        .arg("--version")
        .output()
        .await;
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is required for the browser tests (Node.js 20+ on PATH)"
    );
    if dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return;
    }
    let out = tokio::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
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

/// Where screenshots go: the workspace's target directory (`CARGO_TARGET_DIR` when set).
pub fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    std::fs::create_dir_all(&dir).expect("the screenshot directory");
    dir
}
