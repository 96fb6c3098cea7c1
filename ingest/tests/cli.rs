//! The tokens CLI contract: `tokens issue` prints only the token on stdout and stores only its
//! hash; `list` shows ids, kinds and groups (never secrets); `revoke` makes the token fail.

use std::process::Command;

use gridclue_core::tokens::{AuthError, TokenStore};
use gridclue_ingest::admin::{AuditAction, AuditActor, TokenAdmin};

fn cli(tokens_file: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gridclue-ingest"))
        .args(args)
        .env_remove("GRIDCLUE_CONFIG")
        .env("GRIDCLUE_TOKENS_FILE", tokens_file)
        .output()
        .expect("running gridclue-ingest")
}

#[test]
fn issue_list_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.json");

    let out = cli(
        &file,
        &[
            "tokens",
            "issue",
            "--group",
            "ride_hailing",
            "--name",
            "driver 7",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "only the token on stdout: {stdout:?}");
    let token = lines[0];
    assert!(token.starts_with("gct_"));
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(!stored.contains(token), "the token itself is never stored");

    let store = TokenStore::open(&file).unwrap();
    let record = store.authenticate_token(token).unwrap();
    assert_eq!(record.group.map(|g| g.as_str()), Some("ride_hailing"));

    let out = cli(&file, &["tokens", "issue"]);
    assert!(out.status.success());
    let out = cli(&file, &["tokens", "list"]);
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(listing.contains(&record.id) && listing.contains("ride_hailing"));
    assert!(
        listing.contains("grid_member"),
        "reporters default to grid members"
    );
    assert!(!listing.contains("gct_"), "no secrets in the listing");

    let out = cli(&file, &["tokens", "revoke", &record.id]);
    assert!(out.status.success());
    let store = TokenStore::open(&file).unwrap();
    assert_eq!(store.authenticate_token(token), Err(AuthError::Revoked));
    let out = cli(&file, &["tokens", "revoke", "tok_missing"]);
    assert!(!out.status.success());
    let out = cli(
        &file,
        &["tokens", "issue", "--kind", "district", "--group", "truck"],
    );
    assert!(!out.status.success(), "groups belong to reporter tokens");

    // Every change the CLI made is in the audit log, by the CLI's user.
    let audit = TokenAdmin::new(&file).audit().unwrap();
    let actions: Vec<AuditAction> = audit.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        vec![AuditAction::Issue, AuditAction::Issue, AuditAction::Revoke]
    );
    assert!(audit
        .iter()
        .all(|e| matches!(e.actor, AuditActor::Cli { .. })));
    assert_eq!(audit[2].token.id, record.id);
}

/// CLI processes and an in-process administrator issuing at the same time lose no token and
/// no audit entry (the file lock serialises them across processes).
#[test]
fn concurrent_cli_processes_and_the_admin_lose_no_change() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.json");
    let processes: Vec<_> = (0..4)
        .map(|p| {
            let file = file.clone();
            std::thread::spawn(move || {
                for i in 0..5 {
                    let name = format!("cli-{p}-{i}");
                    let out = cli(&file, &["tokens", "issue", "--name", &name]);
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            })
        })
        .collect();
    let admin = TokenAdmin::new(&file);
    let actor = AuditActor::Cli {
        user: "in-process".into(),
    };
    for i in 0..10 {
        admin
            .issue(
                &actor,
                gridclue_core::tokens::TokenKind::Reporter,
                None,
                None,
                &format!("admin-{i}"),
                None,
            )
            .unwrap();
    }
    for p in processes {
        p.join().unwrap();
    }
    let tokens = admin.list().unwrap();
    assert_eq!(tokens.len(), 30, "4 × 5 from the CLI and 10 in process");
    let audit = admin.audit().unwrap();
    assert_eq!(audit.len(), 30);
    for t in &tokens {
        assert!(
            audit.iter().any(|e| e.token.id == t.id),
            "{} audited",
            t.name
        );
    }
}

/// Runs the service itself (no subcommand) and expects it to refuse to start, naming `what`.
fn refuses_to_start(envs: &[(&str, &str)], what: &str) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gridclue-ingest"));
    cmd.env_remove("GRIDCLUE_CONFIG")
        .env("GRIDCLUE_LISTEN", "127.0.0.1:0");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running gridclue-ingest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{envs:?} started: {stderr}");
    assert!(
        stderr.contains(what),
        "{envs:?}: {what} not named in {stderr}"
    );
}

#[test]
fn a_typo_in_the_configuration_stops_the_service_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ingest.json");
    std::fs::write(&file, r#"{"produce_timeout": 100}"#).unwrap();
    let file = file.to_str().unwrap();

    refuses_to_start(&[("GRIDCLUE_CONFIG", file)], "\"produce_timeout\"");
    refuses_to_start(
        &[("GRIDCLUE_RATE_LIMIT_TOKEN_PER_SECOND", "1")],
        "GRIDCLUE_RATE_LIMIT_TOKEN_PER_SECOND",
    );
    refuses_to_start(
        &[("GRIDCLUE_PRODUCE_TIMEOUT_MS", "\"5s\"")],
        "GRIDCLUE_PRODUCE_TIMEOUT_MS",
    );
    refuses_to_start(
        &[("GRIDCLUE_PRODUCE_TIMEOUT_MS", "0")],
        "produce_timeout_ms",
    );
    refuses_to_start(
        &[("GRIDCLUE_KAFKA_EXTRA", r#"{"enable.auto.commit":"true"}"#)],
        "enable.auto.commit",
    );
    refuses_to_start(
        &[("GRIDCLUE_CLICKHOUSE_URL", "127.0.0.1:8123")],
        "clickhouse_url",
    );
}

/// Street and department tokens carry their scope; a department must be one of the category
/// table's, checked when the token is issued.
#[test]
fn staff_tokens_are_issued_with_a_checked_scope() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.json");
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data");
    let issue = |args: &[&str]| {
        let mut all = vec!["tokens", "issue"];
        all.extend_from_slice(args);
        Command::new(env!("CARGO_BIN_EXE_gridclue-ingest"))
            .args(&all)
            .env_remove("GRIDCLUE_CONFIG")
            .env("GRIDCLUE_TOKENS_FILE", &file)
            .env("GRIDCLUE_DATA_DIR", &data)
            .output()
            .expect("running gridclue-ingest")
    };
    let out = issue(&["--kind", "department", "--scope", "water_affairs"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let record = TokenStore::open(&file)
        .unwrap()
        .authenticate_token(&token)
        .unwrap();
    let actor = record.actor();
    assert_eq!(
        (
            actor.kind.as_str(),
            actor.scope.as_ref().map(|s| s.as_str())
        ),
        ("department", Some("water_affairs"))
    );

    let out = issue(&["--kind", "department", "--scope", "sewers"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown department") && err.contains("water_affairs"),
        "{err}"
    );
    assert!(!issue(&["--kind", "department"]).status.success());
    assert!(issue(&["--kind", "street", "--scope", "310199003"])
        .status
        .success());
    assert!(!issue(&["--kind", "street", "--scope", "3101"])
        .status
        .success());
    assert!(!issue(&["--kind", "district", "--scope", "310199003"])
        .status
        .success());
    let listing = String::from_utf8(cli(&file, &["tokens", "list"]).stdout).unwrap();
    assert!(
        listing.contains("department") && listing.contains("water_affairs"),
        "{listing}"
    );
}
