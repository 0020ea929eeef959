//! The report as JSON, for dashboards and for `gate`, which reads it back.

use std::path::Path;

use serde::Deserialize;

use super::{Report, SCHEMA_VERSION};
use crate::error::{Error, Result};
use crate::regular_file::read_regular_text;

/// Far above any report's size (a few MB for hundreds of models); a larger
/// file is not a report.
const MAX_REPORT_BYTES: u64 = 1 << 30;

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
    let text = read_regular_text(path, MAX_REPORT_BYTES).map_err(failed)?;
    #[derive(Deserialize)]
    struct Version {
        schema_version: u32,
        /// Only audit reports have groups.
        groups: Option<serde::de::IgnoredAny>,
    }
    if !text.trim_start().starts_with('{') {
        return Err(failed(
            "not a churn-audit JSON report: a report is a JSON object".into(),
        ));
    }
    let version: Version = serde_json::from_str(&text)
        .map_err(|err| failed(format!("not a churn-audit JSON report: {err}")))?;
    if version.groups.is_some() {
        return Err(failed(
            "is an audit report; gate, --baseline and compare read run reports (an audit takes the gate's checks itself)".into(),
        ));
    }
    if version.schema_version != SCHEMA_VERSION {
        return Err(failed(format!(
            "schema_version {} is not supported (this churn-audit reads version {SCHEMA_VERSION})",
            version.schema_version
        )));
    }
    let report: Report = serde_json::from_str(&text)
        .map_err(|err| failed(format!("not a churn-audit JSON report: {err}")))?;
    check_consistency(&report)
        .map_err(|problem| failed(format!("inconsistent report: {problem}")))?;
    Ok(report)
}

/// The figures the gate judges must agree with each other, so a hand-edited
/// or corrupted report is refused rather than passed.
fn check_consistency(report: &Report) -> std::result::Result<(), String> {
    let analysis = &report.analysis;
    let n = report.models.len();
    if n < 2 || analysis.accuracy.n != n {
        return Err(format!(
            "{n} models, but accuracy is over {}; a report needs at least 2",
            analysis.accuracy.n
        ));
    }
    let mut shares = vec![
        ("accuracy.std", analysis.accuracy.std),
        ("churn.mean", analysis.churn.mean),
        ("churn.ci95.low", analysis.churn.ci95.low),
        ("churn.ci95.high", analysis.churn.ci95.high),
        ("accuracy.mean", analysis.accuracy.mean),
    ];
    let mut means = vec![
        ("churn", analysis.churn.ci95, analysis.churn.mean),
        ("accuracy", analysis.accuracy.ci95, analysis.accuracy.mean),
    ];
    // The anchor's figures are gated (--max-churn-vs-anchor) and compared too.
    if let Some(anchor) = &report.anchor {
        let analysis = &anchor.analysis;
        shares.push(("anchor.anchor_accuracy", analysis.anchor_accuracy));
        for (name, share) in [
            ("anchor.churn", &analysis.churn),
            ("anchor.good_churn", &analysis.good_churn),
            ("anchor.bad_churn", &analysis.bad_churn),
        ] {
            shares.extend([
                (name, share.mean),
                (name, share.ci95.low),
                (name, share.ci95.high),
            ]);
            means.push((name, share.ci95, share.mean));
        }
    }
    if let Some((name, value)) = shares
        .iter()
        .find(|(_, value)| !(0.0..=1.0).contains(value))
    {
        return Err(format!("{name} is {value}, outside [0, 1]"));
    }
    for (name, interval, value) in means {
        if !(interval.low <= value && value <= interval.high) {
            return Err(format!(
                "{name}.ci95 [{}, {}] does not contain its mean {value}",
                interval.low, interval.high
            ));
        }
    }
    Ok(())
}
