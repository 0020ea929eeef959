//! The embedded default dataset: UCI optdigits as shipped by scikit-learn
//! (1797 8×8 images, pixel counts 0..16, digit label last). Compiled into the
//! binary so `churn-audit run` needs no files; see fixtures/README.md.

use super::csv::{self, CsvOptions};
use super::input::{data_error, decode};
use super::{Dataset, Loaded};
use crate::error::Result;

const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../fixtures/digits.csv.gz");
const SOURCE_NAME: &str = "digits (embedded)";
const PIXELS: usize = 64;
const MAX_PIXEL: u16 = 16;
const CLASSES: usize = 10;

/// Loads the embedded digits, pixels scaled to [0, 1]; the test set is split off later.
pub fn load() -> Result<Loaded> {
    let bytes = decode(SOURCE_NAME, DIGITS_CSV_GZ.to_vec())?;
    Ok(Loaded {
        train: parse(&bytes)?,
        test: None,
        pixels_divided_by: Some(MAX_PIXEL),
    })
}

/// The generic CSV reader, then the checks only this file's contract allows:
/// 64 whole pixel counts in 0..=16 per row.
fn parse(bytes: &[u8]) -> Result<Dataset> {
    let options = CsvOptions {
        label_column: None,
        num_classes: Some(CLASSES),
    };
    let table = csv::parse(SOURCE_NAME, bytes, options)?;
    if table.n_features != PIXELS {
        return Err(data_error(
            SOURCE_NAME,
            "line 1",
            format!(
                "expected {} fields, found {}",
                PIXELS + 1,
                table.n_features + 1
            ),
        ));
    }
    if let Some(position) = table
        .features
        .iter()
        .position(|&v| v.fract() != 0.0 || !(0.0..=f32::from(MAX_PIXEL)).contains(&v))
    {
        return Err(data_error(
            SOURCE_NAME,
            format!(
                "row {}, field {}",
                position / PIXELS + 1,
                position % PIXELS + 1
            ),
            format!(
                "pixel {} is not a count in 0..={MAX_PIXEL}",
                table.features[position]
            ),
        ));
    }
    Ok(Dataset {
        name: "digits".into(),
        features: table
            .features
            .iter()
            .map(|&v| v / f32::from(MAX_PIXEL))
            .collect(),
        n_features: PIXELS,
        ids: (0..table.labels.len()).collect(),
        labels: table.labels,
        n_classes: CLASSES,
        image_shape: Some((8, 8)),
        class_names: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_digits_load_value_by_value() {
        let loaded = load().unwrap();
        assert_eq!(loaded.pixels_divided_by, Some(16));
        assert!(loaded.test.is_none());
        let data = loaded.train;
        assert_eq!(data.len(), 1797);
        assert_eq!(data.features.len(), 1797 * 64);
        // First row of the file: 0,0,5,13,9,1,0,0,... label 0.
        assert_eq!(&data.features[..4], &[0.0, 0.0, 5.0 / 16.0, 13.0 / 16.0]);
        assert_eq!(data.labels[0], 0);
        let per_class: Vec<usize> = (0..10)
            .map(|c| data.labels.iter().filter(|&&l| l == c).count())
            .collect();
        assert_eq!(
            per_class,
            vec![178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
        );
    }

    #[test]
    fn malformed_rows_name_their_line() {
        let row = |label: &str| format!("{}{label}\n", "0,".repeat(64));
        let err = parse(format!("{}{}", row("1"), row("12")).as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "digits (embedded):line 2, field 65: label 12 is beyond the 10 classes (labels 0..9)"
        );
        let err = parse(b"1,2,3\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "digits (embedded):line 1: expected 65 fields, found 3"
        );
        let err = parse(format!("{}{}", row("1"), row("1").replacen('0', "17", 1)).as_bytes())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "digits (embedded):row 2, field 1: pixel 17 is not a count in 0..=16"
        );
    }
}
