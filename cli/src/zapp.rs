//! `zoe zapp ...`: local work on ZApp descriptions.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use zoe_common::zapp::{Issue, ParseError, parse};

#[derive(Subcommand)]
pub enum ZappCommand {
    /// Check ZApp files and report every problem, each with a JSON pointer.
    ///
    /// Prints `FILE: ok` for each valid file, otherwise one line per problem.
    /// Exits 0 only when every file is valid.
    Validate {
        /// ZApp JSON files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Print a machine-readable report.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: ZappCommand) -> Result<ExitCode> {
    match cmd {
        ZappCommand::Validate { files, json } => Ok(validate_files(&files, json, |t| parse(t).map(|(_, w)| w))),
    }
}

fn issues_json(list: &[Issue]) -> serde_json::Value {
    json!(list.iter().map(|i| json!({"path": i.path, "message": i.message})).collect::<Vec<_>>())
}

/// Reports on each file as `check` (a parser returning the warnings)
/// finds it: ZApps here, workflow documents in `zoe workflow validate`.
pub fn validate_files(
    files: &[PathBuf],
    as_json: bool,
    check: impl Fn(&str) -> Result<Vec<Issue>, ParseError>,
) -> ExitCode {
    let mut all_ok = true;
    let mut report = Vec::new();
    for path in files {
        let name = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                all_ok = false;
                if as_json {
                    report.push(json!({"file": name, "valid": false, "read_error": e.to_string(), "errors": [], "warnings": []}));
                } else {
                    println!("{name}: cannot read: {e}");
                }
                continue;
            }
        };
        match check(&text) {
            Ok(warnings) => {
                if as_json {
                    report.push(json!({"file": name, "valid": true, "errors": [], "warnings": issues_json(&warnings)}));
                } else {
                    for w in &warnings {
                        println!("{name}: warning: {w}");
                    }
                    println!("{name}: ok");
                }
            }
            Err(ParseError::Syntax { line, column, message }) => {
                all_ok = false;
                if as_json {
                    report.push(json!({
                        "file": name, "valid": false, "errors": [], "warnings": [],
                        "syntax_error": {"line": line, "column": column, "message": message},
                    }));
                } else {
                    println!("{name}: not valid JSON: line {line}, column {column}: {message}");
                }
            }
            Err(ParseError::Invalid(r)) => {
                all_ok = false;
                if as_json {
                    report.push(json!({"file": name, "valid": false, "errors": issues_json(&r.errors), "warnings": issues_json(&r.warnings)}));
                } else {
                    for e in &r.errors {
                        println!("{name}: {e}");
                    }
                    for w in &r.warnings {
                        println!("{name}: warning: {w}");
                    }
                }
            }
        }
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&json!({"valid": all_ok, "files": report})).expect("serialisable"));
    }
    if all_ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
