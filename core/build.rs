//! Stamps the git commit into the build (`GRIDCLUE_BUILD_COMMIT`, read by telemetry's
//! `gridclue_build_info`): `GRIDCLUE_GIT_COMMIT` when set (image builds have no `.git`), else
//! `git rev-parse --short=12 HEAD`, else "unknown".

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=GRIDCLUE_GIT_COMMIT");
    let commit = match std::env::var("GRIDCLUE_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_owned(),
        _ => {
            // Rebuild when HEAD moves: HEAD itself (a branch switch), the branch's ref (a
            // commit) and packed-refs (refs packed by gc). Only files that exist: cargo reruns
            // a build script at every build while a watched path is missing.
            let mut watched = Vec::new();
            if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
                watched.push(PathBuf::from(git_dir).join("HEAD"));
            }
            if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
                let common = PathBuf::from(common);
                watched.push(common.join("packed-refs"));
                if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
                    watched.push(common.join(head_ref));
                }
            }
            for path in watched.iter().filter(|p| p.exists()) {
                println!("cargo:rerun-if-changed={}", path.display());
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
        }
    };
    println!("cargo:rustc-env=GRIDCLUE_BUILD_COMMIT={commit}");
}
