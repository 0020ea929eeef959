//! The fixtures under fixtures/, loaded value by value through `data::load`.
//! The IDX files are written by `idx_fixtures` below (with `idx::encode`); a
//! test checks that the committed files still match it byte for byte
//! (CHURN_AUDIT_WRITE_FIXTURES=1 rewrites them after a change here).

use std::io::Write;
use std::path::PathBuf;

use churn_audit::config::DataConfig;
use churn_audit::data::idx::encode;
use churn_audit::data::{load, Prepared, SplitSpec, SplitUsed};
use flate2::write::GzEncoder;
use flate2::Compression;

const SIDE: u32 = 4;
const PIXELS: usize = (SIDE * SIDE) as usize;
const N_TRAIN: usize = 20;
const N_TEST: usize = 6;

fn train_pixel(k: usize) -> u8 {
    (k * 7 % 256) as u8
}

fn test_pixel(k: usize) -> u8 {
    (k * 5 % 256) as u8
}

fn label(image: usize) -> u8 {
    (image % 3) as u8
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn images(n: usize, pixel: fn(usize) -> u8) -> Vec<u8> {
    let data: Vec<u8> = (0..n * PIXELS).map(pixel).collect();
    encode(&[n as u32, SIDE, SIDE], &data)
}

fn labels(n: usize) -> Vec<u8> {
    encode(&[n as u32], &(0..n).map(label).collect::<Vec<_>>())
}

/// Every IDX fixture file with its exact bytes: the good directory (training
/// files gzipped, test files raw), and per bad case a copy with one file broken.
fn idx_fixtures() -> Vec<(PathBuf, Vec<u8>)> {
    let train_images = gzip(&images(N_TRAIN, train_pixel));
    let good = [
        ("train-images-idx3-ubyte.gz", train_images.clone()),
        ("train-labels-idx1-ubyte.gz", gzip(&labels(N_TRAIN))),
        ("t10k-images-idx3-ubyte", images(N_TEST, test_pixel)),
        ("t10k-labels-idx1-ubyte", labels(N_TEST)),
    ];
    let variants = [
        ("fixtures/idx", None),
        (
            "fixtures/bad/idx-truncated-gz",
            Some((0, train_images[..train_images.len() - 20].to_vec())),
        ),
        (
            "fixtures/bad/idx-wrong-magic",
            Some((3, images(N_TEST, label))),
        ),
        (
            "fixtures/bad/idx-count-mismatch",
            Some((1, gzip(&labels(N_TRAIN - 1)))),
        ),
        (
            "fixtures/bad/idx-oversized-header",
            Some((2, encode(&[60000, 28, 28], &[7; 100]))),
        ),
    ];
    let mut files = Vec::new();
    for (dir, broken) in variants {
        for (index, (name, bytes)) in good.iter().enumerate() {
            let bytes = match &broken {
                Some((which, replacement)) if *which == index => replacement.clone(),
                _ => bytes.clone(),
            };
            files.push((PathBuf::from(dir).join(name), bytes));
        }
    }
    files
}

#[test]
fn idx_fixtures_match_their_generator() {
    let rewrite = std::env::var_os("CHURN_AUDIT_WRITE_FIXTURES").is_some();
    for (path, bytes) in idx_fixtures() {
        if rewrite {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap();
        assert!(
            committed == bytes,
            "{} differs from idx_fixtures(); rerun with CHURN_AUDIT_WRITE_FIXTURES=1",
            path.display()
        );
    }
}

fn config(source: &str) -> DataConfig {
    DataConfig {
        source: source.parse().unwrap(),
        test: None,
        label_column: None,
        num_features: None,
        num_classes: None,
        standardize: false,
        split: SplitSpec {
            seed: 0,
            test_fraction: 0.2,
        },
    }
}

fn prepared(config: DataConfig) -> Prepared {
    match load(&config) {
        Ok(prepared) => prepared,
        Err(err) => panic!("{err}"),
    }
}

#[test]
fn idx_pair_loads_value_by_value() {
    let data = prepared(config("mnist:fixtures/idx"));
    assert_eq!(data.split_used, SplitUsed::SourceTestSet);
    assert_eq!(data.preprocessing.pixels_divided_by, Some(255));
    let (train, test) = (&data.split.train, &data.split.test);
    assert_eq!(train.name, "idx:fixtures/idx");
    assert_eq!(train.image_shape, Some((4, 4)));
    assert_eq!((train.n_features, train.n_classes), (16, 3));
    assert_eq!(test.n_classes, 3);
    let expected = |n: usize, pixel: fn(usize) -> u8| -> Vec<f32> {
        (0..n * PIXELS)
            .map(|k| f32::from(pixel(k)) / 255.0)
            .collect()
    };
    assert_eq!(train.features, expected(N_TRAIN, train_pixel));
    assert_eq!(test.features, expected(N_TEST, test_pixel));
    let labels = |n: usize| (0..n).map(|i| u16::from(label(i))).collect::<Vec<_>>();
    assert_eq!(train.labels, labels(N_TRAIN));
    assert_eq!(test.labels, labels(N_TEST));
    assert_eq!(test.ids, (0..N_TEST).collect::<Vec<_>>());
    // Worked by hand: the last pixel of the first image is 7 · 15 = 105.
    assert_eq!(train.features[15], 105.0 / 255.0);
}

#[test]
fn csv_with_its_own_test_file_loads_value_by_value() {
    let mut with_test = config("csv:fixtures/small.csv");
    with_test.test = Some("fixtures/small-test.csv".into());
    let data = prepared(with_test);
    assert_eq!(data.split_used, SplitUsed::SourceTestSet);
    let (train, test) = (&data.split.train, &data.split.test);
    assert_eq!(train.len(), 10);
    assert_eq!((train.n_features, train.n_classes), (3, 3));
    assert_eq!(&train.features[..6], &[5.1, 3.5, 1.4, 4.9, 3.0, 1.4]);
    assert_eq!(train.labels, vec![0, 0, 1, 1, 2, 2, 0, 1, 2, 0]);
    assert_eq!(
        test.features,
        vec![5.4, 3.9, 1.7, 6.0, 2.2, 4.0, 6.9, 3.1, 5.4]
    );
    assert_eq!(test.labels, vec![0, 1, 2]);
    assert_eq!(train.image_shape, None);
}

#[test]
fn csv_without_a_test_file_is_split_per_class() {
    let mut by_name = config("csv:fixtures/small.csv");
    by_name.label_column = Some("species".into());
    let data = prepared(by_name);
    assert_eq!(
        data.split_used,
        SplitUsed::Stratified(SplitSpec {
            seed: 0,
            test_fraction: 0.2
        })
    );
    // One test example per class (round(0.2 · 4), round(0.2 · 3), round(0.2 · 3)).
    let mut test_labels = data.split.test.labels.clone();
    test_labels.sort_unstable();
    assert_eq!(test_labels, vec![0, 1, 2]);
    assert_eq!(data.split.train.len(), 7);
}

#[test]
fn standardising_uses_training_statistics() {
    let mut standardized = config("csv:fixtures/small.csv");
    standardized.test = Some("fixtures/small-test.csv".into());
    standardized.standardize = true;
    let data = prepared(standardized);
    assert!(data.preprocessing.standardize);
    let train = &data.split.train;
    // Column 0 of the training file: mean 5.6, population variance 0.39.
    let column: Vec<f64> = train
        .features
        .iter()
        .step_by(3)
        .map(|&v| f64::from(v))
        .collect();
    let mean = column.iter().sum::<f64>() / 10.0;
    let variance = column.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 10.0;
    assert!(mean.abs() < 1e-6, "{mean}");
    assert!((variance - 1.0).abs() < 1e-5, "{variance}");
    let test_first = f64::from(data.split.test.features[0]);
    assert!(
        (test_first - (5.4 - 5.6) / 0.39f64.sqrt()).abs() < 1e-5,
        "{test_first}"
    );
}

#[test]
fn libsvm_densifies_value_by_value() {
    let data = prepared(config("libsvm:fixtures/small.libsvm"));
    let train = &data.split.train;
    let test = &data.split.test;
    assert_eq!((train.n_features, train.n_classes), (3, 3));
    assert_eq!(train.len() + test.len(), 10);
    // Rows keep their source ids; check a few rows with absent features.
    let row = |id: usize| -> Vec<f32> {
        let (set, position) = match train.ids.iter().position(|&i| i == id) {
            Some(p) => (train, p),
            None => (test, test.ids.iter().position(|&i| i == id).unwrap()),
        };
        set.features[position * 3..position * 3 + 3].to_vec()
    };
    assert_eq!(row(0), vec![5.1, 3.5, 1.4]);
    assert_eq!(row(2), vec![6.2, 0.0, 4.3]);
    assert_eq!(row(3), vec![0.0, 3.0, 4.2]);
    assert_eq!(row(9), vec![0.0, 0.0, 1.5]);
}

#[test]
fn gzipped_text_loads_like_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let packed = dir.path().join("small.csv.gz");
    std::fs::write(&packed, gzip(&std::fs::read("fixtures/small.csv").unwrap())).unwrap();
    let plain = prepared(config("csv:fixtures/small.csv"));
    let gzipped = prepared(config(&format!("csv:{}", packed.display())));
    assert_eq!(gzipped.split.train.features, plain.split.train.features);
    assert_eq!(gzipped.split.test.labels, plain.split.test.labels);
    assert_eq!(
        gzipped.split.test.fingerprint(),
        plain.split.test.fingerprint()
    );
}
