//! Helpers shared by the CLI integration tests: run the real `moe` binary and check its exit code
//! and messages.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Run `moe args…` from the repository root.
pub fn moe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moe")).args(args).current_dir(repo()).env("RAYON_NUM_THREADS", "2").output().expect("run moe")
}

/// Run and expect success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let o = moe(args);
    let (out, err) = (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned());
    assert!(o.status.success(), "moe {args:?} failed ({:?})\nstdout:\n{out}\nstderr:\n{err}", o.status);
    out
}

/// Run and expect failure with exit code 2 and every `needles` string in stderr (no panic).
pub fn fails(args: &[&str], needles: &[&str]) {
    let o = moe(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "moe {args:?} should fail with exit 2; stderr:\n{err}");
    assert!(!err.contains("panicked"), "moe {args:?} panicked:\n{err}");
    for n in needles {
        assert!(err.contains(n), "moe {args:?}: stderr should mention {n:?}:\n{err}");
    }
}

/// A path as `&str` for argument lists.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
