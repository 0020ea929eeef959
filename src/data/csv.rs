//! Delimited text: one example per line, numeric features and one integer
//! label column. The separator (tab, `;` or `,`, in that order of preference)
//! and a header (a first line with any non-numeric cell) are detected from the
//! first line. Quoting is not supported.

use std::path::Path;

use super::input::{data_error, parse_feature, parse_label, read, text, Table};
use super::Loaded;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, Default)]
pub struct CsvOptions<'a> {
    /// `--label-column`: a header name or a 0-based index; default the last column.
    pub label_column: Option<&'a str>,
    pub num_classes: Option<usize>,
}

/// Loads `path`, and `test` as the test set when given (the same layout).
pub fn load(path: &Path, test: Option<&Path>, options: CsvOptions) -> Result<Loaded> {
    let train_name = path.display().to_string();
    let (train, train_header) = parse_with_header(&train_name, &read("--data", path)?, options)?;
    let test = test
        .map(|test_path| {
            let test_name = test_path.display().to_string();
            let (table, header) = parse_with_header(&test_name, &read("--test", test_path)?, options)?;
            // Columns are matched by position, so differently ordered or
            // named columns would silently feed the wrong features.
            if let (Some(train_header), Some(header)) = (&train_header, &header) {
                if train_header != header {
                    return Err(data_error(
                        &test_name,
                        "line 1",
                        format!(
                            "header {} differs from the training file's {}; columns are matched by position",
                            header.join(","),
                            train_header.join(",")
                        ),
                    ));
                }
            }
            if table.n_features != train.n_features {
                return Err(data_error(
                    &test_name,
                    "line 1",
                    format!(
                        "{} features, but the training file {train_name} has {}",
                        table.n_features, train.n_features
                    ),
                ));
            }
            Ok(table)
        })
        .transpose()?;
    Table::into_loaded(
        &format!("csv:{train_name}"),
        &train_name,
        train,
        test,
        options.num_classes,
    )
}

pub fn parse(source_name: &str, bytes: &[u8], options: CsvOptions) -> Result<Table> {
    parse_with_header(source_name, bytes, options).map(|(table, _)| table)
}

/// The table and its header, if the first line is one.
fn parse_with_header(
    source_name: &str,
    bytes: &[u8],
    options: CsvOptions,
) -> Result<(Table, Option<Vec<String>>)> {
    let text = text(source_name, bytes)?;
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line))
        .filter(|(_, line)| !line.trim().is_empty());
    let Some((first_number, first)) = lines.next() else {
        return Err(data_error(source_name, "line 1", "the file is empty"));
    };
    let separator = ['\t', ';', ','].into_iter().find(|&s| first.contains(s));
    let first_cells = cells(first, separator);
    let n_columns = first_cells.len();
    if n_columns < 2 {
        return Err(data_error(
            source_name,
            format!("line {first_number}"),
            "one field; a feature and a label are needed (separators: tab, ';' or ',')",
        ));
    }
    let header = first_cells
        .iter()
        .any(|cell| cell.parse::<f32>().is_err())
        .then(|| {
            first_cells
                .iter()
                .map(|c| c.trim_matches('"').to_owned())
                .collect::<Vec<_>>()
        });
    let label_column = label_column(source_name, header.as_deref(), n_columns, options)?;

    let mut table = Table {
        features: Vec::new(),
        n_features: n_columns - 1,
        labels: Vec::new(),
    };
    let data_lines = std::iter::once((first_number, first))
        .filter(|_| header.is_none())
        .chain(lines);
    for (number, line) in data_lines {
        let cells = cells(line, separator);
        if cells.len() != n_columns {
            return Err(data_error(
                source_name,
                format!("line {number}"),
                format!("expected {n_columns} fields, found {}", cells.len()),
            ));
        }
        for (column, cell) in cells.iter().enumerate() {
            let at = |message: String| {
                data_error(
                    source_name,
                    format!("line {number}, field {}", column + 1),
                    message,
                )
            };
            if column == label_column {
                table
                    .labels
                    .push(parse_label(cell, options.num_classes).map_err(at)?);
            } else {
                table.features.push(parse_feature(cell).map_err(at)?);
            }
        }
    }
    if table.labels.is_empty() {
        return Err(data_error(
            source_name,
            format!("line {}", first_number + 1),
            "no data rows after the header",
        ));
    }
    Ok((table, header))
}

fn cells(line: &str, separator: Option<char>) -> Vec<&str> {
    match separator {
        Some(separator) => line.split(separator).map(str::trim).collect(),
        None => vec![line.trim()],
    }
}

fn label_column(
    source_name: &str,
    header: Option<&[String]>,
    n_columns: usize,
    options: CsvOptions,
) -> Result<usize> {
    let Some(wanted) = options.label_column else {
        return Ok(n_columns - 1);
    };
    if let Some(index) = header.and_then(|names| names.iter().position(|n| n == wanted)) {
        return Ok(index);
    }
    match wanted.parse::<usize>() {
        Ok(index) if index < n_columns => Ok(index),
        Ok(index) => Err(Error::usage(
            "--label-column",
            format!("column {index} is beyond the {n_columns} columns of {source_name} (indices start at 0)"),
        )),
        Err(_) => Err(Error::usage(
            "--label-column",
            format!(
                "{source_name} has no column named '{wanted}'{}",
                header.map_or(" (it has no header)".to_owned(), |names| format!(
                    " (columns: {})",
                    names.join(", ")
                ))
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_str(text: &str, options: CsvOptions) -> Result<Table> {
        parse("t.csv", text.as_bytes(), options)
    }

    #[test]
    fn header_separator_and_label_column_are_detected() {
        let table = parse_str("a;b;class\n1;2.5;0\n-3;4e1;1\n", CsvOptions::default()).unwrap();
        assert_eq!(
            table,
            Table {
                features: vec![1.0, 2.5, -3.0, 40.0],
                n_features: 2,
                labels: vec![0, 1],
            }
        );
        let by_name = CsvOptions {
            label_column: Some("a"),
            ..Default::default()
        };
        let table = parse_str("a\tb\n1\t2\n0\t3\n", by_name).unwrap();
        assert_eq!(table.features, vec![2.0, 3.0]);
        assert_eq!(table.labels, vec![1, 0]);
        let by_index = CsvOptions {
            label_column: Some("0"),
            ..Default::default()
        };
        let table = parse_str("1,2\r\n\r\n0,3\r\n", by_index).unwrap();
        assert_eq!(table.labels, vec![1, 0]);
        assert_eq!(table.features, vec![2.0, 3.0]);
    }

    #[test]
    fn bad_label_columns_are_usage_errors() {
        let named = CsvOptions {
            label_column: Some("kind"),
            ..Default::default()
        };
        assert_eq!(
            parse_str("a,b\n1,0\n", named).unwrap_err().to_string(),
            "--label-column: t.csv has no column named 'kind' (columns: a, b)"
        );
        let index = CsvOptions {
            label_column: Some("2"),
            ..Default::default()
        };
        assert_eq!(
            parse_str("1,0\n", index).unwrap_err().to_string(),
            "--label-column: column 2 is beyond the 2 columns of t.csv (indices start at 0)"
        );
    }

    #[test]
    fn malformed_text_names_line_and_field() {
        let cases = [
            ("", "t.csv:line 1: the file is empty"),
            ("a,b\n\n", "t.csv:line 2: no data rows after the header"),
            ("1\n", "t.csv:line 1: one field; a feature and a label are needed (separators: tab, ';' or ',')"),
            ("1,2,0\n3,1\n", "t.csv:line 2: expected 3 fields, found 2"),
            ("1,0\n2,x\n", "t.csv:line 2, field 2: label 'x' is not an integer"),
            ("1,0\ninf,1\n", "t.csv:line 2, field 1: feature 'inf' is not finite"),
        ];
        for (text, message) in cases {
            assert_eq!(
                parse_str(text, CsvOptions::default())
                    .unwrap_err()
                    .to_string(),
                message
            );
        }
        assert_eq!(
            parse("t.csv", b"1,0\n\xff,1\n", CsvOptions::default())
                .unwrap_err()
                .to_string(),
            "t.csv:line 2: not valid UTF-8"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let result = parse("f", &bytes, CsvOptions::default());
            prop_assert!(matches!(result, Ok(_) | Err(Error::Data { .. })), "{:?}", result.err());
        }

        #[test]
        fn csv_shaped_text_never_panics(
            text in "[0-9a-z,;\t.\n +eE-]{0,300}",
            label in proptest::option::of("[0-9a-z]{1,2}"),
        ) {
            let options = CsvOptions { label_column: label.as_deref(), num_classes: None };
            let result = parse("f", text.as_bytes(), options);
            prop_assert!(
                matches!(result, Ok(_) | Err(Error::Data { .. }) | Err(Error::Usage { .. })),
                "{:?}",
                result.err()
            );
        }
    }
}
