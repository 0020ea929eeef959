//! Reading a file this process did not write: it must be a regular file of
//! bounded size. Anything else is refused without reading it: a FIFO would
//! block, a device (a link to /dev/zero) would never end, and a huge file
//! would exhaust memory.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

pub enum ReadError {
    Missing,
    /// Not a regular file, too large, or unreadable: why.
    Refused(String),
}

impl ReadError {
    /// Why, for a file that should be there.
    pub fn reason(self) -> String {
        match self {
            ReadError::Missing => format!(
                "cannot read it: {}",
                std::io::Error::from_raw_os_error(libc::ENOENT)
            ),
            ReadError::Refused(why) => why,
        }
    }
}

/// The text of `path`, a regular file of at most `limit` bytes, in UTF-8.
pub fn read_regular_text(path: &Path, limit: u64) -> Result<String, String> {
    let bytes = read_regular(path, limit).map_err(ReadError::reason)?;
    String::from_utf8(bytes)
        .map_err(|_| "cannot read it: stream did not contain valid UTF-8".into())
}

/// The bytes of `path`, a regular file (after following links) of at most
/// `limit` bytes.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let refused = |err: std::io::Error| match err.kind() {
        ErrorKind::NotFound => ReadError::Missing,
        _ => ReadError::Refused(format!("cannot read it: {err}")),
    };
    // Non-blocking, so that opening a FIFO returns at once; the type is
    // checked on the open file, so nothing can be swapped in between.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(refused)?;
    let meta = file.metadata().map_err(refused)?;
    if !meta.is_file() {
        return Err(ReadError::Refused(format!(
            "not a regular file ({})",
            describe(meta.file_type())
        )));
    }
    if meta.len() > limit {
        return Err(ReadError::Refused(format!(
            "{} bytes, more than the {limit} it can hold",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Capped too: a file that grows while read.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(refused)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::Refused(format!(
            "more than the {limit} bytes it can hold"
        )));
    }
    Ok(bytes)
}

/// What a file that is not a regular one is, for messages.
pub fn describe(kind: fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}
