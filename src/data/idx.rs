//! IDX files, the MNIST family's format: a directory holding
//! train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
//! t10k-labels-idx1-ubyte, each gzip-compressed (`.gz`) or raw. Only unsigned
//! bytes are read: images n×height×width, labels n. The t10k pair is the test
//! set, so no split is made. Pixels are scaled to [0, 1] by dividing by 255.

use std::path::{Path, PathBuf};

use super::input::{check_label, class_count, data_error, read, MAX_VALUES};
use super::{Dataset, Loaded};
use crate::error::{Error, Result};

const UNSIGNED_BYTE: u8 = 0x08;
const PIXEL_MAX: u16 = 255;
/// A side longer than this is not an image this tool can train on.
const MAX_SIDE: usize = 4096;

/// A decoded IDX header and the data after it, checked to be exactly as long
/// as the header announces.
#[derive(Debug, PartialEq)]
pub struct Idx<'a> {
    pub dims: Vec<usize>,
    pub data: &'a [u8],
}

fn images_name(prefix: &str) -> String {
    format!("{prefix}-images-idx3-ubyte")
}

fn labels_name(prefix: &str) -> String {
    format!("{prefix}-labels-idx1-ubyte")
}

/// Whether `name` is one of the files `load_dir` may read.
pub fn is_data_file(name: &str) -> bool {
    let name = name.strip_suffix(".gz").unwrap_or(name);
    ["train", "t10k"]
        .iter()
        .any(|prefix| name == images_name(prefix) || name == labels_name(prefix))
}

pub fn load_dir(name: &str, dir: &Path, num_classes: Option<usize>) -> Result<Loaded> {
    let pair = |prefix: &str| -> Result<(PathBuf, PathBuf)> {
        Ok((
            find(dir, &images_name(prefix))?,
            find(dir, &labels_name(prefix))?,
        ))
    };
    let (train_images, train_labels) = pair("train")?;
    let (test_images, test_labels) = pair("t10k")?;
    let train = read_pair(&train_images, &train_labels, num_classes)?;
    let test = read_pair(&test_images, &test_labels, num_classes)?;
    if train.image_shape != test.image_shape {
        let shape = |d: &Dataset| d.image_shape.map(|(h, w)| format!("{h}×{w}"));
        return Err(data_error(
            &test_images.display().to_string(),
            "header",
            format!(
                "images are {}, but the training images are {}",
                shape(&test).unwrap_or_default(),
                shape(&train).unwrap_or_default()
            ),
        ));
    }
    let n_classes = class_count(
        &train_labels.display().to_string(),
        &train.labels,
        &test.labels,
        num_classes,
    )?;
    let finish = |data: Dataset| Dataset {
        name: name.to_owned(),
        n_classes,
        ..data
    };
    Ok(Loaded {
        train: finish(train),
        test: Some(finish(test)),
        pixels_divided_by: Some(PIXEL_MAX),
    })
}

/// `stem.gz` if present, else `stem`.
fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    let packed = dir.join(format!("{stem}.gz"));
    let raw = dir.join(stem);
    if packed.is_file() {
        Ok(packed)
    } else if raw.is_file() {
        Ok(raw)
    } else {
        Err(Error::usage(
            "--data",
            format!("{} has neither {stem}.gz nor {stem}", dir.display()),
        ))
    }
}

/// Images and their labels as one dataset (n_classes is set by the caller).
fn read_pair(
    images_path: &Path,
    labels_path: &Path,
    num_classes: Option<usize>,
) -> Result<Dataset> {
    let images_name = images_path.display().to_string();
    let labels_name = labels_path.display().to_string();
    let image_bytes = read("--data", images_path)?;
    let images = parse(&images_name, &image_bytes, 3)?;
    let label_bytes = read("--data", labels_path)?;
    let labels = parse(&labels_name, &label_bytes, 1)?;
    let (n, height, width) = (images.dims[0], images.dims[1], images.dims[2]);
    if labels.dims[0] != n {
        return Err(data_error(
            &labels_name,
            "header",
            format!("{} labels for {n} images in {images_name}", labels.dims[0]),
        ));
    }
    let labels = labels
        .data
        .iter()
        .enumerate()
        .map(|(i, &label)| {
            check_label(f64::from(label), num_classes)
                .map_err(|message| data_error(&labels_name, format!("label {}", i + 1), message))
        })
        .collect::<Result<Vec<u16>>>()?;
    Ok(Dataset {
        name: images_name,
        features: images
            .data
            .iter()
            .map(|&pixel| f32::from(pixel) / f32::from(PIXEL_MAX))
            .collect(),
        n_features: height * width,
        ids: (0..n).collect(),
        labels,
        n_classes: 0,
        image_shape: Some((height, width)),
        class_names: None,
    })
}

/// Decodes the header of an unsigned-byte IDX file with `ndims` dimensions
/// and checks the announced size against the bytes present before anything
/// is allocated for the data.
pub fn parse<'a>(source_name: &str, bytes: &'a [u8], ndims: u8) -> Result<Idx<'a>> {
    let header_len = 4 + 4 * usize::from(ndims);
    let bad_header = |message: String| data_error(source_name, "header", message);
    if bytes.is_empty() {
        return Err(bad_header("the file is empty".into()));
    }
    let expected = [0, 0, UNSIGNED_BYTE, ndims];
    if bytes.len() < 4 || bytes[..4] != expected {
        let found: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(bad_header(format!(
            "magic {} is not an unsigned-byte IDX file with {ndims} dimension{} (expected {})",
            found.join(" "),
            if ndims == 1 { "" } else { "s" },
            expected.map(|b| format!("{b:02x}")).join(" ")
        )));
    }
    if bytes.len() < header_len {
        return Err(bad_header(format!(
            "{} bytes, too short for a {header_len}-byte header",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let shown = dims
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("×");
    if dims[0] == 0 {
        return Err(bad_header("no examples (first dimension is 0)".into()));
    }
    if dims[1..].iter().any(|&side| side == 0 || side > MAX_SIDE) {
        return Err(bad_header(format!(
            "dimensions {shown}: each image side must be 1..{MAX_SIDE}"
        )));
    }
    let announced = dims.iter().product::<usize>();
    if announced > MAX_VALUES {
        return Err(bad_header(format!(
            "dimensions {shown} exceed the {MAX_VALUES}-value limit"
        )));
    }
    let data = &bytes[header_len..];
    if data.len() != announced {
        return Err(bad_header(format!(
            "dimensions {shown} announce {announced} bytes of data, but the file holds {}",
            data.len()
        )));
    }
    Ok(Idx { dims, data })
}

/// The inverse of [`parse`]: an unsigned-byte IDX file (magic, big-endian
/// dimensions, data), for writing fixtures and small datasets.
pub fn encode(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, UNSIGNED_BYTE, dims.len() as u8];
    for dim in dims {
        bytes.extend(dim.to_be_bytes());
    }
    bytes.extend(data);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_and_data_decode() {
        let bytes = encode(&[2, 2, 3], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255]);
        let idx = parse("i", &bytes, 3).unwrap();
        assert_eq!(idx.dims, vec![2, 2, 3]);
        assert_eq!(idx.data, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255]);
    }

    #[test]
    fn bad_headers_are_refused_before_allocation() {
        let cases = [
            (vec![], "i:header: the file is empty"),
            (
                vec![0, 0, 8, 1, 0],
                "i:header: magic 00 00 08 01 is not an unsigned-byte IDX file with 3 dimensions (expected 00 00 08 03)",
            ),
            (vec![0, 0, 8, 3, 0, 0], "i:header: 6 bytes, too short for a 16-byte header"),
            (
                encode(&[60000, 28, 28], &[1; 84]),
                "i:header: dimensions 60000×28×28 announce 47040000 bytes of data, but the file holds 84",
            ),
            (
                encode(&[u32::MAX, 4096, 4096], &[]),
                "i:header: dimensions 4294967295×4096×4096 exceed the 268435456-value limit",
            ),
            (
                encode(&[1, 0, 3], &[]),
                "i:header: dimensions 1×0×3: each image side must be 1..4096",
            ),
        ];
        for (bytes, message) in cases {
            assert_eq!(parse("i", &bytes, 3).unwrap_err().to_string(), message);
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let result = parse("f", &bytes, 3);
            prop_assert!(matches!(result, Ok(_) | Err(Error::Data { .. })), "{:?}", result.err());
        }

        #[test]
        fn encode_then_parse_round_trips(
            dims in proptest::collection::vec(1u32..6, 3),
            seed in any::<u8>(),
        ) {
            let n = dims.iter().product::<u32>() as usize;
            let data: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(seed)).collect();
            let bytes = encode(&dims, &data);
            let idx = parse("f", &bytes, 3).unwrap();
            prop_assert_eq!(idx.dims, dims.iter().map(|&d| d as usize).collect::<Vec<_>>());
            prop_assert_eq!(idx.data, &data[..]);
        }

        #[test]
        fn idx_shaped_bytes_never_panic(
            dims in proptest::collection::vec(0u32..12, 3),
            data in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let bytes = encode(&dims, &data);
            let result = parse("f", &bytes, 3);
            prop_assert!(matches!(result, Ok(_) | Err(Error::Data { .. })), "{:?}", result.err());
        }
    }
}
