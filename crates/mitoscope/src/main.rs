//! `mitoscope`: the command-line front end. It parses arguments, builds
//! library configurations and prints results; all real work lives in the
//! `mitoscope-*` library crates.

// The doc comments in `cli` are clap's help texts, written for the terminal
// (`cuda[:N]`, `DIR/<slide stem>/`), not rustdoc markup.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    init_logging(args.verbose, args.quiet);
    match commands::run(args.command, args.quiet) {
        Ok(code) => code,
        Err(err) => {
            // One line, with the whole cause chain, as the brief asks of bad input.
            eprintln!("error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: `, leaving out a cause whose text is
/// already there: the libraries' errors name their source in their own
/// message, which `{err:#}` would print twice ("File exists (os error 17):
/// File exists (os error 17)").
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MITOSCOPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that, like ours, names its source in its own message.
    #[derive(Debug)]
    struct Wrapping(std::io::Error);

    impl std::fmt::Display for Wrapping {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot write out.csv: {}", self.0)
        }
    }

    impl std::error::Error for Wrapping {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AlreadyExists, "File exists");
        let err = anyhow::Error::new(Wrapping(io)).context("writing outputs");
        assert_eq!(one_line(&err), "writing outputs: cannot write out.csv: File exists");
        // Causes not yet said are kept.
        let err = anyhow::Error::new(std::io::Error::other("disk full")).context("saving");
        assert_eq!(one_line(&err), "saving: disk full");
    }
}
