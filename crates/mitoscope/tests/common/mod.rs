//! Helpers shared by the integration tests that run the `mitoscope` binary.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs the binary built for this test run.
pub fn mitoscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mitoscope")).args(args).output().expect("the binary runs")
}

/// Runs a command that must succeed; returns its output.
pub fn succeeds(args: &[&str]) -> Output {
    let out = mitoscope(args);
    assert!(
        out.status.success(),
        "mitoscope {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command that must succeed; returns its stdout.
pub fn ok(args: &[&str]) -> String {
    String::from_utf8(succeeds(args).stdout).expect("utf-8 output")
}

/// Runs a command that must fail; returns its stderr, checked to be one clean
/// `error:` line (no panic, no backtrace).
pub fn fails(args: &[&str]) -> String {
    let out = mitoscope(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "mitoscope {args:?} should fail; stdout: {}", String::from_utf8_lossy(&out.stdout));
    assert!(!stderr.contains("panicked"), "panic on bad input: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.last().is_some_and(|l| l.starts_with("error: ")), "expected an error line: {stderr}");
    stderr
}
