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
            // commit) and packed-refs (refs packed by gc).
            if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
                let git_dir = PathBuf::from(git_dir);
                println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
                if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
                    let common = PathBuf::from(common);
                    println!(
                        "cargo:rerun-if-changed={}",
                        common.join("packed-refs").display()
                    );
                    if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
                        println!("cargo:rerun-if-changed={}", common.join(head_ref).display());
                    }
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
        }
    };
    println!("cargo:rustc-env=GRIDCLUE_BUILD_COMMIT={commit}");
}
