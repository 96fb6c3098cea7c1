//! `POST /v1/photos` and `GET /v1/photos/{id}` on an in-process ingest (no ClickHouse: the
//! reads scoped by clues are in `reads.rs`): metadata stripped from real images built in the
//! test, content addressing, who may upload, and every refusal as problem+json.

mod common;

use common::images::{contains, exif_segment, gps_chunks, jpeg, png};
use common::*;
use gridclue_ingest::IngestConfig;
use serde_json::Value;
use sha2::{Digest, Sha256};

const PROBLEM: &str = "application/problem+json";

fn config(env: &Env) -> IngestConfig {
    IngestConfig {
        photo_max_bytes: 4096,
        // Nothing is produced here; the broker is never asked.
        ..env.config("127.0.0.1:9")
    }
}

async fn upload(
    http: &reqwest::Client,
    server: &Server,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = http
        .post(format!("{}/v1/photos", server.url))
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

fn sha256_ref(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn photos_are_stripped_stored_once_by_content_and_read_back_by_their_uploader() {
    let env = Env::with_staff("photos");
    let server = Server::start(config(&env)).await;
    let http = reqwest::Client::new();

    let with_gps = jpeg(&[exif_segment()], 3);
    assert!(contains(&with_gps, b"Exif") && contains(&with_gps, b"GPS"));
    let r = upload(&http, &server, Some(&env.reporter), "image/jpeg", with_gps).await;
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let first: Value = r.json().await.unwrap();
    // The id is the SHA-256 of the picture without its metadata.
    let clean = jpeg(&[], 3);
    assert_eq!(first["photo"], sha256_ref(&clean));
    assert_eq!(first["bytes"], clean.len());
    assert_eq!(first["content_type"], "image/jpeg");
    let hex = first["photo"].as_str().unwrap()["sha256:".len()..].to_owned();
    assert_eq!(location, format!("/v1/photos/{hex}"));

    // The same picture again (here without metadata, by another rider): the same id, 200.
    let r = upload(
        &http,
        &server,
        Some(&env.other_reporter),
        "image/jpeg",
        clean.clone(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["photo"], first["photo"]);
    // Another picture: another id.
    let r = upload(
        &http,
        &server,
        Some(&env.reporter),
        "image/jpeg",
        jpeg(&[exif_segment()], 4),
    )
    .await;
    assert_eq!(r.status(), 201);
    let other: Value = r.json().await.unwrap();
    assert_ne!(other["photo"], first["photo"]);

    // The uploader reads it back, by hex or by reference, stripped, with safe headers.
    for id in [hex.clone(), format!("sha256:{hex}")] {
        let r = http
            .get(format!("{}/v1/photos/{id}", server.url))
            .bearer_auth(&env.reporter)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "image/jpeg");
        assert_eq!(r.headers()["cache-control"], "private");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        let body = r.bytes().await.unwrap();
        assert_eq!(&body[..], &clean[..]);
        assert!(!contains(&body, b"GPS"));
    }
    // So does the district; the second rider uploaded it too.
    for token in [&env.district, &env.other_reporter] {
        let r = http
            .get(format!("{}/v1/photos/{hex}", server.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    // PNG: eXIf and tEXt are gone, the pixels are the same bytes.
    let r = upload(
        &http,
        &server,
        Some(&env.department),
        "image/png",
        png(&gps_chunks()),
    )
    .await;
    assert_eq!(r.status(), 201, "a department uploads its 处置后 photo");
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["photo"], sha256_ref(&png(&[])));
    assert_eq!(p["content_type"], "image/png");
    let r = http
        .get(format!(
            "{}/v1/photos/{}",
            server.url,
            p["photo"].as_str().unwrap()
        ))
        .bearer_auth(&env.department)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
    let body = r.bytes().await.unwrap();
    assert_eq!(&body[..], &png(&[])[..]);
    assert!(!contains(&body, b"eXIf") && !contains(&body, b"tEXt"));

    // Stored once: one image object per picture.
    let stored = std::fs::read_dir(env.dir.join("photos/photos"))
        .unwrap()
        .count();
    assert_eq!(stored, 3);
    server.stop().await.unwrap();
}

/// What is tried, by which token, with which Content-Type and body; the status and code expected.
type Refusal<'a> = (&'a str, Option<&'a str>, &'a str, Vec<u8>, u16, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_with_problem_details() {
    let env = Env::with_staff("photos-bad");
    let server = Server::start(config(&env)).await;
    let http = reqwest::Client::new();
    let good = jpeg(&[], 1);
    let mut too_large = good.clone();
    too_large.truncate(too_large.len() - 2);
    too_large.resize(5000, 0);
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 2);

    let cases: Vec<Refusal<'_>> = vec![
        (
            "no token",
            None,
            "image/jpeg",
            good.clone(),
            401,
            "unauthorized",
        ),
        (
            "revoked",
            Some(&env.revoked),
            "image/jpeg",
            good.clone(),
            401,
            "unauthorized",
        ),
        (
            "street office",
            Some(&env.street),
            "image/jpeg",
            good.clone(),
            403,
            "forbidden",
        ),
        (
            "district",
            Some(&env.district),
            "image/jpeg",
            good.clone(),
            403,
            "forbidden",
        ),
        (
            "gif",
            Some(&env.reporter),
            "image/gif",
            b"GIF89a....".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "no type",
            Some(&env.reporter),
            "",
            good.clone(),
            415,
            "unsupported_media_type",
        ),
        (
            "jpeg as png",
            Some(&env.reporter),
            "image/png",
            good.clone(),
            422,
            "photo_type_mismatch",
        ),
        (
            "text as jpeg",
            Some(&env.reporter),
            "image/jpeg",
            b"hello".to_vec(),
            422,
            "photo_type_mismatch",
        ),
        (
            "empty",
            Some(&env.reporter),
            "image/jpeg",
            Vec::new(),
            422,
            "empty_photo",
        ),
        (
            "truncated",
            Some(&env.reporter),
            "image/jpeg",
            truncated,
            422,
            "invalid_image",
        ),
        (
            "over the limit",
            Some(&env.reporter),
            "image/jpeg",
            too_large,
            413,
            "payload_too_large",
        ),
    ];
    for (what, token, content_type, body, status, code) in cases {
        let r = upload(&http, &server, token, content_type, body).await;
        assert_eq!(r.status(), status, "{what}");
        assert_eq!(r.headers()["content-type"], PROBLEM, "{what}");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["code"], code, "{what}: {problem}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}"
        );
    }
    assert!(
        !env.dir.join("photos/photos").exists(),
        "nothing was stored by refused uploads"
    );

    // Reads: a token is needed, and an id that names no stored photo is a plain 404.
    let unknown = format!("{}/v1/photos/{}", server.url, "ab".repeat(32));
    let r = http.get(&unknown).send().await.unwrap();
    assert_eq!(r.status(), 401);
    for url in [unknown, format!("{}/v1/photos/not-a-hash", server.url)] {
        let r = http
            .get(&url)
            .bearer_auth(&env.district)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{url}");
        assert_eq!(r.headers()["content-type"], PROBLEM);
    }
    server.stop().await.unwrap();
}
