//! The embedded default dataset: UCI optdigits as shipped by scikit-learn
//! (1797 8×8 images, pixel counts 0..16, digit label last). Compiled into the
//! binary so `churn-audit run` needs no files; see fixtures/README.md.

use std::io::Read;

use flate2::read::GzDecoder;

use super::Dataset;
use crate::error::{Error, Result};

const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../fixtures/digits.csv.gz");
const SOURCE_NAME: &str = "digits (embedded)";
const PIXELS: usize = 64;
const MAX_PIXEL: u16 = 16;
const CLASSES: usize = 10;

/// Loads the embedded digits, pixels scaled to [0, 1].
pub fn load() -> Result<Dataset> {
    let mut text = String::new();
    GzDecoder::new(DIGITS_CSV_GZ)
        .read_to_string(&mut text)
        .map_err(|err| Error::Data {
            source_name: SOURCE_NAME.into(),
            location: "gzip stream".into(),
            message: err.to_string(),
        })?;
    parse(&text)
}

fn parse(text: &str) -> Result<Dataset> {
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for (line_index, line) in text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
    {
        let bad = |message: String| Error::Data {
            source_name: SOURCE_NAME.into(),
            location: format!("line {}", line_index + 1),
            message,
        };
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != PIXELS + 1 {
            return Err(bad(format!(
                "expected {} fields, found {}",
                PIXELS + 1,
                cells.len()
            )));
        }
        for (column, cell) in cells.iter().enumerate() {
            let value: u16 = cell.trim().parse().map_err(|_| {
                bad(format!(
                    "field {}: '{cell}' is not a non-negative integer",
                    column + 1
                ))
            })?;
            if column < PIXELS {
                if value > MAX_PIXEL {
                    return Err(bad(format!(
                        "field {}: pixel {value} is above {MAX_PIXEL}",
                        column + 1
                    )));
                }
                features.push(f32::from(value) / f32::from(MAX_PIXEL));
            } else if usize::from(value) >= CLASSES {
                return Err(bad(format!(
                    "field {}: label {value} is not a digit",
                    column + 1
                )));
            } else {
                labels.push(value);
            }
        }
    }
    Ok(Dataset {
        name: "digits".into(),
        features,
        n_features: PIXELS,
        ids: (0..labels.len()).collect(),
        labels,
        n_classes: CLASSES,
        image_shape: Some((8, 8)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_digits_load_value_by_value() {
        let data = load().unwrap();
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
        let err = parse(&format!("{}{}", row("1"), row("12"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "digits (embedded):line 2: field 65: label 12 is not a digit"
        );
        let err = parse("1,2,3\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "digits (embedded):line 1: expected 65 fields, found 3"
        );
    }
}
