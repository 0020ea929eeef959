//! The `--data` value: which loader reads what.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "kebab-case")]
pub enum DataSource {
    /// UCI optdigits, embedded in the binary.
    Digits,
    /// IDX files in `dir`, default the Debian package's directory.
    FashionMnist {
        dir: Option<PathBuf>,
    },
    /// `mnist:DIR` and `idx:DIR`: IDX train/t10k files in a directory.
    Idx {
        dir: PathBuf,
    },
    Csv {
        path: PathBuf,
    },
    Libsvm {
        path: PathBuf,
    },
}

pub const EXPECTED: &str =
    "expected digits, fashion-mnist[:DIR], mnist:DIR, idx:DIR, csv:PATH or libsvm:PATH";

impl DataSource {
    /// What the data is read from on disk: a file (csv, libsvm) or a
    /// directory of IDX files; `None` for the embedded digits.
    pub fn location(&self) -> Option<DataLocation<'_>> {
        match self {
            DataSource::Digits => None,
            DataSource::FashionMnist { dir } => Some(DataLocation::Directory(
                dir.as_deref()
                    .unwrap_or(Path::new(super::fashion_mnist::DEFAULT_DIR)),
            )),
            DataSource::Idx { dir } => Some(DataLocation::Directory(dir)),
            DataSource::Csv { path } | DataSource::Libsvm { path } => {
                Some(DataLocation::File(path))
            }
        }
    }
}

pub enum DataLocation<'a> {
    File(&'a Path),
    Directory(&'a Path),
}

impl FromStr for DataSource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (format, location) = match text.split_once(':') {
            Some((format, location)) => (format, Some(location)),
            None => (text, None),
        };
        let path = || match location {
            Some(location) if !location.is_empty() => Ok(PathBuf::from(location)),
            _ => Err(format!("{format} needs a path: {format}:PATH")),
        };
        match (format, location) {
            ("digits", None) => Ok(DataSource::Digits),
            ("fashion-mnist", None) => Ok(DataSource::FashionMnist { dir: None }),
            ("fashion-mnist", Some(_)) => Ok(DataSource::FashionMnist { dir: Some(path()?) }),
            ("mnist" | "idx", _) => Ok(DataSource::Idx { dir: path()? }),
            ("csv", _) => Ok(DataSource::Csv { path: path()? }),
            ("libsvm", _) => Ok(DataSource::Libsvm { path: path()? }),
            _ => Err(format!("unknown dataset '{text}' ({EXPECTED})")),
        }
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::Digits => write!(f, "digits"),
            DataSource::FashionMnist { dir: None } => write!(f, "fashion-mnist"),
            DataSource::FashionMnist { dir: Some(dir) } => {
                write!(f, "fashion-mnist:{}", dir.display())
            }
            DataSource::Idx { dir } => write!(f, "idx:{}", dir.display()),
            DataSource::Csv { path } => write!(f, "csv:{}", path.display()),
            DataSource::Libsvm { path } => write!(f, "libsvm:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_print_back() {
        for (text, printed) in [
            ("digits", "digits"),
            ("fashion-mnist", "fashion-mnist"),
            ("fashion-mnist:/d", "fashion-mnist:/d"),
            ("mnist:data/m", "idx:data/m"),
            ("idx:data/m", "idx:data/m"),
            ("csv:a:b.csv", "csv:a:b.csv"),
            ("libsvm:x.svm", "libsvm:x.svm"),
        ] {
            assert_eq!(text.parse::<DataSource>().unwrap().to_string(), printed);
        }
        assert_eq!(
            "csv:".parse::<DataSource>().unwrap_err(),
            "csv needs a path: csv:PATH"
        );
        assert_eq!(
            "digits:x".parse::<DataSource>().unwrap_err(),
            format!("unknown dataset 'digits:x' ({EXPECTED})")
        );
        assert_eq!(
            "iris".parse::<DataSource>().unwrap_err(),
            format!("unknown dataset 'iris' ({EXPECTED})")
        );
    }
}
