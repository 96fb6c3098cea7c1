//! The reporting page on a whole stack, in headless Chromium (`ingest/tests/browser/loop.mjs`,
//! see there for the steps): the map draws, a tapped point is named with the grid, community and
//! street that the clue processor then assigns to the clue, a photo taken on the page is stored
//! stripped and referred to by the report, and the "my reports" tab lists the report.
//! Screenshots: `target/reporting-page.png` (before sending) and `target/reporting-page-mine.png`.
//!
//! Chromium: `scripts/browser-deps.sh`; missing, the test says SKIPPED and returns, unless
//! `GRIDCLUE_REQUIRE_BROWSER` is set (as `make test` does), where it fails.

use std::path::PathBuf;
use std::time::Duration;

use gridclue_tests::browser::{chromium, ensure_node_modules, screenshot_dir};

use crate::app::spawn_app;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ingest/tests/browser")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reporting_page_names_the_place_attaches_a_photo_and_lists_my_reports() {
    let Some(chromium) = chromium("the reporting page test") else {
        return;
    };
    ensure_node_modules(&browser_dir()).await;
    let app = spawn_app().await;
    let screenshot = screenshot_dir().join("reporting-page.png");

    let out = tokio::time::timeout(
        Duration::from_secs(240),
        tokio::process::Command::new("node")
            .arg(browser_dir().join("loop.mjs"))
            .arg(&app.ingest_url)
            .arg(&app.reporter_token)
            .arg(&screenshot)
            .env("GRIDCLUE_CHROMIUM", &chromium)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser script finishes within 4 minutes")
    .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser script failed ({}):\n{}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let page: serde_json::Value = serde_json::from_str(stdout.trim()).expect("script result");
    let clue_id = page["clue_id"].as_str().unwrap();
    let photo = page["photo"].as_str().unwrap();

    // The place the page named is the one the clue processor assigned.
    let view = app.clue_view(clue_id).await;
    assert_eq!(view["placement"], "inside", "{view}");
    assert_eq!(view["grid_code"], page["place"]["grid"], "{view}\n{page}");
    assert_eq!(view["community_code"], page["place"]["community"]);
    assert_eq!(view["street_code"], page["place"]["street"]);
    assert_eq!(view["photos"], serde_json::json!([photo]));
    assert_eq!(view["category"], "manhole_cover");
    assert_eq!(page["mine"]["status"], view["status"], "{page}");

    // The stored photo is a JPEG without the GPS block the original carried; the clue's street
    // office may read it now that the clue refers to it, another street office may not.
    let street = view["street_code"].as_str().unwrap();
    let get = |token: String| {
        let (http, url) = (
            app.http.clone(),
            format!("{}/v1/photos/{photo}", app.ingest_url),
        );
        async move { http.get(url).bearer_auth(token).send().await.unwrap() }
    };
    let r = get(app.reporter_token.clone()).await;
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap();
    assert!(bytes.starts_with(&[0xFF, 0xD8]));
    assert!(!bytes.windows(4).any(|w| w == b"Exif" || w == b"GPS "));
    assert_eq!(get(app.street_tokens[street].clone()).await.status(), 200);
    let other = app.street_tokens.keys().find(|s| *s != street).unwrap();
    assert_eq!(get(app.street_tokens[other].clone()).await.status(), 404);
    assert!(screenshot.exists());
    app.stop().await;
}
