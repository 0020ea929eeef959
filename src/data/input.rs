//! What every file loader shares: reading a file (gzip or plain) under a size
//! cap, the error constructor, the limits, and the rules for features and labels.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use super::{Dataset, Loaded};
use crate::error::{Error, Result};

/// No input decodes to more than this, so a gzip bomb or a huge file is refused
/// instead of exhausting memory.
pub const MAX_INPUT_BYTES: usize = 1 << 30;
/// Dense feature values after decoding (1 GiB of f32).
pub const MAX_VALUES: usize = 1 << 28;
/// Labels are stored as u16.
pub const MAX_CLASSES: usize = 1 << 16;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

pub fn data_error(
    source_name: &str,
    location: impl Into<String>,
    message: impl Into<String>,
) -> Error {
    Error::Data {
        source_name: source_name.into(),
        location: location.into(),
        message: message.into(),
    }
}

/// Reads `path` whole, decompressing it if it starts with the gzip magic.
/// A file that cannot be opened is a usage error of `flag`, which named it.
pub fn read(flag: &str, path: &Path) -> Result<Vec<u8>> {
    let source_name = path.display().to_string();
    let file = std::fs::File::open(path)
        .map_err(|err| Error::usage(flag, format!("cannot read {source_name}: {err}")))?;
    let mut raw = Vec::new();
    file.take(MAX_INPUT_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|err| data_error(&source_name, format!("byte {}", raw.len()), err.to_string()))?;
    if raw.len() > MAX_INPUT_BYTES {
        return Err(too_large(&source_name));
    }
    decode(&source_name, raw)
}

/// Plain bytes pass through; gzip is decompressed, refusing a truncated or
/// corrupt stream and output beyond [`MAX_INPUT_BYTES`].
pub fn decode(source_name: &str, raw: Vec<u8>) -> Result<Vec<u8>> {
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let mut decoded = Vec::new();
    GzDecoder::new(raw.as_slice())
        .take(MAX_INPUT_BYTES as u64 + 1)
        .read_to_end(&mut decoded)
        .map_err(|err| {
            data_error(
                source_name,
                "gzip stream",
                format!(
                    "truncated or corrupt after {} decompressed bytes ({err})",
                    decoded.len()
                ),
            )
        })?;
    if decoded.len() > MAX_INPUT_BYTES {
        return Err(too_large(source_name));
    }
    Ok(decoded)
}

fn too_large(source_name: &str) -> Error {
    data_error(
        source_name,
        "size",
        format!("more than {} MiB of data", MAX_INPUT_BYTES >> 20),
    )
}

/// The text of a text format, refusing bytes that are not UTF-8 (by line).
pub fn text<'a>(source_name: &str, bytes: &'a [u8]) -> Result<&'a str> {
    let text = std::str::from_utf8(bytes).map_err(|err| {
        let line = bytes[..err.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        data_error(source_name, format!("line {}", line + 1), "not valid UTF-8")
    })?;
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text))
}

/// A feature value: any finite number.
pub fn parse_feature(cell: &str) -> Result<f32, String> {
    let value: f32 = cell
        .parse()
        .map_err(|_| format!("feature '{cell}' is not a number"))?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("feature '{cell}' is not finite"))
    }
}

/// A class label: a whole number (written `3` or `3.0`) below `num_classes`
/// when given, else below [`MAX_CLASSES`].
pub fn parse_label(cell: &str, num_classes: Option<usize>) -> Result<u16, String> {
    let value: f64 = cell
        .parse()
        .map_err(|_| format!("label '{cell}' is not an integer"))?;
    if !value.is_finite() || value.fract() != 0.0 {
        return Err(format!("label '{cell}' is not an integer"));
    }
    if value < 0.0 {
        return Err(format!("label {cell} is negative"));
    }
    check_label(value, num_classes)
}

/// A label that is already a whole non-negative number (a byte in IDX).
pub fn check_label(value: f64, num_classes: Option<usize>) -> Result<u16, String> {
    match num_classes {
        Some(n) if value >= n as f64 => Err(format!(
            "label {value} is beyond the {n} classes (labels 0..{})",
            n.saturating_sub(1)
        )),
        _ if value >= MAX_CLASSES as f64 => Err(format!(
            "label {value} is beyond the {MAX_CLASSES} supported classes"
        )),
        _ => Ok(value as u16),
    }
}

/// The class count: `--num-classes` when given, else one past the largest
/// label in either set. Training data with a single class has no churn to
/// measure, so it is refused.
pub fn class_count(
    source_name: &str,
    train: &[u16],
    test: &[u16],
    num_classes: Option<usize>,
) -> Result<usize> {
    let present: BTreeSet<u16> = train.iter().copied().collect();
    if let [only] = present.iter().collect::<Vec<_>>()[..] {
        return Err(data_error(
            source_name,
            "labels",
            format!("every example has label {only}; at least two classes are needed"),
        ));
    }
    let largest = train.iter().chain(test).copied().max().unwrap_or(0);
    Ok(num_classes.unwrap_or(usize::from(largest) + 1))
}

/// One tabular file decoded: dense row-major features and labels.
#[derive(Debug, PartialEq)]
pub struct Table {
    pub features: Vec<f32>,
    pub n_features: usize,
    pub labels: Vec<u16>,
}

impl Table {
    /// A training table and optional test table (same width) as a source:
    /// no image shape, no class names, ids are data-row indices.
    pub fn into_loaded(
        name: &str,
        train_source: &str,
        train: Table,
        test: Option<Table>,
        num_classes: Option<usize>,
    ) -> Result<Loaded> {
        let test_labels = test.as_ref().map_or(&[][..], |t| &t.labels[..]);
        let n_classes = class_count(train_source, &train.labels, test_labels, num_classes)?;
        let dataset = |table: Table| Dataset {
            name: name.to_owned(),
            ids: (0..table.labels.len()).collect(),
            features: table.features,
            n_features: table.n_features,
            labels: table.labels,
            n_classes,
            image_shape: None,
            class_names: None,
        };
        Ok(Loaded {
            train: dataset(train),
            test: test.map(dataset),
            pixels_divided_by: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use flate2::write::GzEncoder;
    use flate2::Compression;
    use proptest::prelude::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gzip_is_detected_and_truncation_refused() {
        let payload: Vec<u8> = (0..=255).cycle().take(5000).collect();
        let packed = gzip(&payload);
        assert_eq!(decode("f", packed.clone()).unwrap(), payload);
        assert_eq!(decode("f", payload.clone()).unwrap(), payload);
        let err = decode("f", packed[..packed.len() - 12].to_vec()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "f:gzip stream: truncated or corrupt after 4643 decompressed bytes (incomplete deflate stream)"
        );
    }

    #[test]
    fn labels_follow_the_rules() {
        assert_eq!(parse_label("3", None), Ok(3));
        assert_eq!(parse_label("3.0", Some(4)), Ok(3));
        assert_eq!(parse_label("-1", None).unwrap_err(), "label -1 is negative");
        assert_eq!(
            parse_label("1.5", None).unwrap_err(),
            "label '1.5' is not an integer"
        );
        assert_eq!(
            parse_label("cat", None).unwrap_err(),
            "label 'cat' is not an integer"
        );
        assert_eq!(
            parse_label("3", Some(3)).unwrap_err(),
            "label 3 is beyond the 3 classes (labels 0..2)"
        );
        assert_eq!(
            parse_label("65536", None).unwrap_err(),
            "label 65536 is beyond the 65536 supported classes"
        );
        assert_eq!(
            parse_feature("nan").unwrap_err(),
            "feature 'nan' is not finite"
        );
        assert_eq!(
            parse_feature("1e39").unwrap_err(),
            "feature '1e39' is not finite"
        );
        assert_eq!(parse_feature("-2.5e-1"), Ok(-0.25));
    }

    #[test]
    fn class_count_refuses_a_single_class() {
        assert_eq!(class_count("f", &[0, 2], &[4], None).unwrap(), 5);
        assert_eq!(class_count("f", &[0, 2], &[], Some(7)).unwrap(), 7);
        assert_eq!(
            class_count("f", &[1, 1], &[0], None)
                .unwrap_err()
                .to_string(),
            "f:labels: every example has label 1; at least two classes are needed"
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut raw = GZIP_MAGIC.to_vec();
            raw.extend(tail);
            match decode("f", raw) {
                Ok(_) | Err(Error::Data { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
        }
    }
}
