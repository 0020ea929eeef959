//! The report as JSON, for dashboards and for `gate`, which reads it back.

use std::path::Path;

use serde::Deserialize;

use super::{Report, SCHEMA_VERSION};
use crate::error::{Error, Result};

pub fn render(report: &Report) -> String {
    serde_json::to_string_pretty(report).expect("a Report always serialises") + "\n"
}

/// Reads a report written by this or an earlier churn-audit, refusing another
/// schema version before its fields are read: a field that changed meaning
/// must not be judged by today's rules.
pub fn load(path: &Path) -> Result<Report> {
    let failed = |message: String| Error::ReportFile {
        path: path.to_owned(),
        message,
    };
    let text =
        std::fs::read_to_string(path).map_err(|err| failed(format!("cannot read: {err}")))?;
    #[derive(Deserialize)]
    struct Version {
        schema_version: u32,
    }
    let version: Version = serde_json::from_str(&text)
        .map_err(|err| failed(format!("not a churn-audit JSON report: {err}")))?;
    if version.schema_version != SCHEMA_VERSION {
        return Err(failed(format!(
            "schema_version {} is not supported (this churn-audit reads version {SCHEMA_VERSION})",
            version.schema_version
        )));
    }
    serde_json::from_str(&text)
        .map_err(|err| failed(format!("not a churn-audit JSON report: {err}")))
}
