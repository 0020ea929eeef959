//! Fashion-MNIST (Zalando, MIT licence): 60000 training and 10000 test
//! 28×28 greyscale images of 10 kinds of clothing, as IDX files. Debian and
//! Ubuntu ship them in the `dataset-fashion-mnist` package.

use std::path::Path;

use super::{idx, Loaded};
use crate::error::{Error, Result};

pub const DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";
const CLASS_NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Loads the IDX files from `dir` (default [`DEFAULT_DIR`]) with the class names.
pub fn load(dir: Option<&Path>) -> Result<Loaded> {
    let dir = dir.unwrap_or(Path::new(DEFAULT_DIR));
    if !dir.is_dir() {
        return Err(Error::usage(
            "--data",
            format!(
                "fashion-mnist: {} does not exist; install Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist) or pass fashion-mnist:DIR",
                dir.display()
            ),
        ));
    }
    let mut loaded = idx::load_dir("fashion-mnist", dir, Some(CLASS_NAMES.len()))?;
    let names = Some(CLASS_NAMES.map(str::to_owned).to_vec());
    loaded.train.class_names = names.clone();
    if let Some(test) = &mut loaded.test {
        test.class_names = names;
    }
    Ok(loaded)
}
