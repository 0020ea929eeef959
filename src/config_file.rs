//! `--config audit.toml`: command-line options kept in a TOML file. Each key
//! is a long flag of `run` or `gate` without its dashes (`max-churn = 0.02`).
//! The file's options are placed before the command line's, and every flag
//! overrides an earlier use of itself, so clap checks file values exactly like
//! typed ones and a flag typed on the command line wins.
//!
//! One file serves both commands: a key only the other command knows is
//! skipped, a key neither knows is an error (a typo must not pass silently).

use std::ffi::OsString;
use std::path::Path;

use clap::{ArgAction, CommandFactory};

use crate::cli::Cli;
use crate::error::{Error, Result};
use crate::regular_file::read_regular_text;

/// A config file holds a few dozen flags.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Flags for `subcommand` from the file at `path`.
pub fn flags(path: &Path, subcommand: &str) -> Result<Vec<OsString>> {
    let name = path.display().to_string();
    let failed = |location: String, message: String| Error::Data {
        source_name: name.clone(),
        location,
        message,
    };
    let text = read_regular_text(path, MAX_CONFIG_BYTES)
        .map_err(|why| Error::usage("--config", format!("{name}: {why}")))?;
    let table: toml::Table = text.parse().map_err(|err: toml::de::Error| {
        let before = text
            .get(..err.span().map_or(0, |span| span.start))
            .unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |newline| newline + 1) + 1;
        failed(format!("{line}:{column}"), err.message().to_owned())
    })?;
    let cli = Cli::command();
    let known = |command: &str, key: &str| {
        cli.find_subcommand(command).and_then(|command| {
            command
                .get_arguments()
                .find(|arg| {
                    // --config does not nest, and --help in a file would only print help.
                    arg.get_long() == Some(key)
                        && key != "config"
                        && !matches!(arg.get_action(), ArgAction::Help)
                })
                .cloned()
        })
    };
    let mut flags = Vec::new();
    for (key, value) in &table {
        let Some(arg) = known(subcommand, key) else {
            if cli
                .get_subcommands()
                .any(|other| known(other.get_name(), key).is_some())
            {
                continue;
            }
            return Err(failed(
                key.clone(),
                "not an option of any churn-audit command".to_owned(),
            ));
        };
        let flag = OsString::from(format!("--{key}"));
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            // A switch: true gives the flag, false leaves it out.
            match value {
                toml::Value::Boolean(true) => flags.push(flag),
                toml::Value::Boolean(false) => {}
                _ => return Err(failed(key.clone(), "expected true or false".to_owned())),
            }
            continue;
        }
        let text = match value {
            toml::Value::String(text) => text.clone(),
            toml::Value::Integer(number) => number.to_string(),
            toml::Value::Float(number) => number.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    toml::Value::Integer(number) => Ok(number.to_string()),
                    toml::Value::String(text) => Ok(text.clone()),
                    _ => Err(failed(
                        key.clone(),
                        "list items must be numbers or strings".to_owned(),
                    )),
                })
                .collect::<Result<Vec<_>>>()?
                .join(","),
            _ => {
                return Err(failed(
                    key.clone(),
                    "expected a number, string or list".to_owned(),
                ))
            }
        };
        flags.push(flag);
        flags.push(text.into());
    }
    Ok(flags)
}
