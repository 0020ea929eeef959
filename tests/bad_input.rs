//! Every bad input under fixtures/bad/ is a one-line error naming the file and
//! the place, with exit code 2, before any training.

mod common;

use common::refused;

fn fails_with(args: &[&str], message: &str) {
    refused(
        &[
            &["run", "--seeds", "2", "--epochs", "1", "--threads", "1"],
            args,
        ]
        .concat(),
        &format!("error: {message}"),
    );
}

#[test]
fn truncated_gzip() {
    fails_with(
        &["--data", "idx:fixtures/bad/idx-truncated-gz"],
        "fixtures/bad/idx-truncated-gz/train-images-idx3-ubyte.gz:gzip stream: truncated or corrupt after 264 decompressed bytes (incomplete deflate stream)",
    );
}

#[test]
fn wrong_idx_magic() {
    fails_with(
        &["--data", "mnist:fixtures/bad/idx-wrong-magic"],
        "fixtures/bad/idx-wrong-magic/t10k-labels-idx1-ubyte:header: magic 00 00 08 03 is not an unsigned-byte IDX file with 1 dimension (expected 00 00 08 01)",
    );
}

#[test]
fn image_and_label_counts_differ() {
    fails_with(
        &["--data", "idx:fixtures/bad/idx-count-mismatch"],
        "fixtures/bad/idx-count-mismatch/train-labels-idx1-ubyte.gz:header: 19 labels for 20 images in fixtures/bad/idx-count-mismatch/train-images-idx3-ubyte.gz",
    );
}

#[test]
fn header_announcing_more_than_the_file_holds() {
    fails_with(
        &["--data", "idx:fixtures/bad/idx-oversized-header"],
        "fixtures/bad/idx-oversized-header/t10k-images-idx3-ubyte:header: dimensions 60000×28×28 announce 47040000 bytes of data, but the file holds 100",
    );
}

#[test]
fn ragged_csv_row() {
    fails_with(
        &["--data", "csv:fixtures/bad/ragged.csv"],
        "fixtures/bad/ragged.csv:line 3: expected 3 fields, found 2",
    );
}

#[test]
fn non_numeric_cell() {
    fails_with(
        &["--data", "csv:fixtures/bad/non-numeric.csv"],
        "fixtures/bad/non-numeric.csv:line 2, field 2: feature 'abc' is not a number",
    );
}

#[test]
fn nan_feature() {
    fails_with(
        &["--data", "csv:fixtures/bad/nan.csv"],
        "fixtures/bad/nan.csv:line 2, field 2: feature 'NaN' is not finite",
    );
}

#[test]
fn infinite_feature() {
    fails_with(
        &["--data", "csv:fixtures/bad/infinite.csv"],
        "fixtures/bad/infinite.csv:line 2, field 2: feature '-inf' is not finite",
    );
}

#[test]
fn negative_label() {
    fails_with(
        &["--data", "csv:fixtures/bad/negative-label.csv"],
        "fixtures/bad/negative-label.csv:line 2, field 3: label -1 is negative",
    );
}

#[test]
fn non_integer_label() {
    fails_with(
        &["--data", "csv:fixtures/bad/non-integer-label.csv"],
        "fixtures/bad/non-integer-label.csv:line 2, field 3: label '0.5' is not an integer",
    );
}

#[test]
fn label_beyond_the_class_count() {
    fails_with(
        &[
            "--data",
            "csv:fixtures/bad/label-beyond-classes.csv",
            "--num-classes",
            "3",
        ],
        "fixtures/bad/label-beyond-classes.csv:line 3, field 3: label 3 is beyond the 3 classes (labels 0..2)",
    );
}

#[test]
fn empty_file() {
    fails_with(
        &["--data", "csv:fixtures/bad/empty.csv"],
        "fixtures/bad/empty.csv:line 1: the file is empty",
    );
}

#[test]
fn single_class() {
    fails_with(
        &["--data", "csv:fixtures/bad/single-class.csv"],
        "fixtures/bad/single-class.csv:labels: every example has label 1; at least two classes are needed",
    );
}

#[test]
fn test_file_with_another_feature_count() {
    fails_with(
        &[
            "--data",
            "csv:fixtures/small.csv",
            "--test",
            "fixtures/bad/test-width.csv",
        ],
        "fixtures/bad/test-width.csv:line 1: 2 features, but the training file fixtures/small.csv has 3",
    );
}

#[test]
fn libsvm_index_beyond_num_features() {
    fails_with(
        &[
            "--data",
            "libsvm:fixtures/bad/index-beyond.libsvm",
            "--num-features",
            "3",
        ],
        "fixtures/bad/index-beyond.libsvm:line 2, field 3: index 4 is beyond --num-features 3",
    );
}

#[test]
fn bytes_that_are_not_utf8() {
    fails_with(
        &["--data", "csv:fixtures/bad/not-utf8.csv"],
        "fixtures/bad/not-utf8.csv:line 2: not valid UTF-8",
    );
}

#[test]
fn missing_sources_say_how_to_get_them() {
    fails_with(
        &["--data", "fashion-mnist:fixtures/nowhere"],
        "--data: fashion-mnist: fixtures/nowhere does not exist; install Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist) or pass fashion-mnist:DIR",
    );
    fails_with(
        &["--data", "csv:fixtures/nowhere.csv"],
        "--data: cannot read fixtures/nowhere.csv: No such file or directory (os error 2)",
    );
    fails_with(
        &["--data", "iris"],
        "invalid value 'iris' for '--data <SOURCE>': unknown dataset 'iris' (expected digits, fashion-mnist[:DIR], mnist:DIR, idx:DIR, csv:PATH or libsvm:PATH)",
    );
}

#[test]
fn flags_that_do_not_fit_the_data() {
    fails_with(
        &["--data", "csv:fixtures/small.csv", "--model", "cnn"],
        "--model: cnn needs image data (digits, fashion-mnist, mnist:DIR, idx:DIR); this dataset has no image shape",
    );
    fails_with(
        &["--label-column", "2"],
        "--label-column: applies to csv data only, not digits",
    );
    fails_with(
        &["--data", "csv:fixtures/small.csv", "--label-column", "kind"],
        "--label-column: fixtures/small.csv has no column named 'kind' (columns: sepal_length, sepal_width, petal_length, species)",
    );
}

#[test]
fn test_file_with_other_column_names() {
    fails_with(
        &["--data", "csv:fixtures/small.csv", "--test", "fixtures/bad/test-header.csv"],
        "fixtures/bad/test-header.csv:line 1: header sepal_width,sepal_length,petal_length,species differs from the training file's sepal_length,sepal_width,petal_length,species; columns are matched by position",
    );
}
