//! LibSVM / SVMlight sparse text: `label index:value index:value ...` per line,
//! indices 1-based and ascending, absent features zero, `#` starts a comment.
//! Rows are densified to `--num-features` columns (default: the largest index
//! in the training and test files).

use std::path::Path;

use super::input::{data_error, parse_feature, parse_label, read, text, Table, MAX_VALUES};
use super::Loaded;
use crate::error::Result;

/// Feature indices above this are refused as absurd before any densifying.
pub const MAX_FEATURES: usize = 1 << 24;

#[derive(Clone, Copy, Debug, Default)]
pub struct LibsvmOptions {
    pub num_features: Option<usize>,
    pub num_classes: Option<usize>,
}

/// One parsed file, still sparse: per row its (0-based column, value) pairs.
#[derive(Debug, PartialEq)]
pub struct Sparse {
    pub rows: Vec<Vec<(usize, f32)>>,
    pub labels: Vec<u16>,
    /// One past the largest 0-based column used.
    pub width: usize,
}

pub fn load(path: &Path, test: Option<&Path>, options: LibsvmOptions) -> Result<Loaded> {
    let train_name = path.display().to_string();
    let train = parse(&train_name, &read("--data", path)?, options)?;
    let test = test
        .map(|test_path| {
            let test_name = test_path.display().to_string();
            Ok::<_, crate::Error>((
                parse(&test_name, &read("--test", test_path)?, options)?,
                test_name,
            ))
        })
        .transpose()?;
    let width = options
        .num_features
        .unwrap_or_else(|| train.width.max(test.as_ref().map_or(0, |t| t.0.width)));
    let train = densify(&train_name, train, width)?;
    let test = test
        .map(|(sparse, name)| densify(&name, sparse, width))
        .transpose()?;
    Table::into_loaded(
        &format!("libsvm:{train_name}"),
        &train_name,
        train,
        test,
        options.num_classes,
    )
}

pub fn parse(source_name: &str, bytes: &[u8], options: LibsvmOptions) -> Result<Sparse> {
    let text = text(source_name, bytes)?;
    let mut sparse = Sparse {
        rows: Vec::new(),
        labels: Vec::new(),
        width: 0,
    };
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let content = line.split('#').next().unwrap_or_default();
        let mut fields = content.split_whitespace();
        let Some(label) = fields.next() else {
            continue;
        };
        let at = |field: usize, message: String| {
            data_error(
                source_name,
                format!("line {number}, field {field}"),
                message,
            )
        };
        sparse
            .labels
            .push(parse_label(label, options.num_classes).map_err(|m| at(1, m))?);
        let mut row = Vec::new();
        for (position, pair) in fields.enumerate() {
            let at = |message: String| at(position + 2, message);
            let (index, value) = pair
                .split_once(':')
                .ok_or_else(|| at(format!("'{pair}' is not index:value")))?;
            let column = feature_index(index, options.num_features).map_err(at)?;
            if let Some(&(previous, _)) = row.last() {
                if column <= previous {
                    return Err(at(format!(
                        "index {} follows index {}; indices must ascend",
                        column + 1,
                        previous + 1
                    )));
                }
            }
            row.push((column, parse_feature(value).map_err(at)?));
            sparse.width = sparse.width.max(column + 1);
        }
        sparse.rows.push(row);
    }
    if sparse.rows.is_empty() {
        return Err(data_error(source_name, "line 1", "the file is empty"));
    }
    Ok(sparse)
}

/// The 0-based column of a 1-based index.
fn feature_index(text: &str, num_features: Option<usize>) -> Result<usize, String> {
    let index: usize = text
        .parse()
        .map_err(|_| format!("index '{text}' is not a positive integer"))?;
    match num_features {
        _ if index == 0 => Err("index 0: indices start at 1".to_owned()),
        Some(n) if index > n => Err(format!("index {index} is beyond --num-features {n}")),
        _ if index > MAX_FEATURES => Err(format!(
            "index {index} is beyond the {MAX_FEATURES} supported features"
        )),
        _ => Ok(index - 1),
    }
}

/// Dense rows of `width` columns, refused before allocating if too large.
fn densify(source_name: &str, sparse: Sparse, width: usize) -> Result<Table> {
    let n_rows = sparse.rows.len();
    if width == 0 {
        return Err(data_error(source_name, "line 1", "no row has a feature"));
    }
    if n_rows.checked_mul(width).is_none_or(|n| n > MAX_VALUES) {
        return Err(data_error(
            source_name,
            "size",
            format!("{n_rows} rows × {width} features exceed the {MAX_VALUES}-value limit"),
        ));
    }
    let mut features = vec![0.0; n_rows * width];
    for (row, pairs) in sparse.rows.iter().enumerate() {
        for &(column, value) in pairs {
            features[row * width + column] = value;
        }
    }
    Ok(Table {
        features,
        n_features: width,
        labels: sparse.labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use proptest::prelude::*;

    #[test]
    fn rows_densify_with_zeros() {
        let text = "1 1:0.5 3:-2 # comment\n\n0 2:4\n2\n";
        let sparse = parse("s", text.as_bytes(), LibsvmOptions::default()).unwrap();
        assert_eq!(sparse.width, 3);
        assert_eq!(sparse.labels, vec![1, 0, 2]);
        let table = densify("s", sparse, 4).unwrap();
        assert_eq!(
            table.features,
            vec![0.5, 0.0, -2.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
        assert_eq!(table.n_features, 4);
    }

    #[test]
    fn malformed_pairs_name_line_and_field() {
        let options = LibsvmOptions {
            num_features: Some(4),
            num_classes: None,
        };
        let cases = [
            ("", "s:line 1: the file is empty"),
            (
                "1 5:1\n",
                "s:line 1, field 2: index 5 is beyond --num-features 4",
            ),
            ("1 0:1\n", "s:line 1, field 2: index 0: indices start at 1"),
            (
                "1 2:1 2:3\n",
                "s:line 1, field 3: index 2 follows index 2; indices must ascend",
            ),
            ("0 1:1\n1 2\n", "s:line 2, field 2: '2' is not index:value"),
            (
                "0 1:1\n1 x:2\n",
                "s:line 2, field 2: index 'x' is not a positive integer",
            ),
            ("-1 1:1\n", "s:line 1, field 1: label -1 is negative"),
            (
                "1 1:NaN\n",
                "s:line 1, field 2: feature 'NaN' is not finite",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(
                parse("s", text.as_bytes(), options)
                    .unwrap_err()
                    .to_string(),
                message
            );
        }
        let huge = "1 16777216:1\n0 1:1\n".repeat(9);
        let sparse = parse("s", huge.as_bytes(), LibsvmOptions::default()).unwrap();
        assert_eq!(
            densify("s", sparse, 16777216).err().map(|e| e.to_string()),
            Some("s:size: 18 rows × 16777216 features exceed the 268435456-value limit".into())
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let result = parse("f", &bytes, LibsvmOptions::default());
            prop_assert!(matches!(result, Ok(_) | Err(Error::Data { .. })), "{:?}", result.err());
        }

        #[test]
        fn libsvm_shaped_text_never_panics(text in "[0-9: .\n#-]{0,300}", width in 0usize..40) {
            if let Ok(sparse) = parse("f", text.as_bytes(), LibsvmOptions::default()) {
                let width = sparse.width + width;
                let result = densify("f", sparse, width);
                prop_assert!(matches!(result, Ok(_) | Err(Error::Data { .. })), "{:?}", result.err());
            }
        }
    }
}
