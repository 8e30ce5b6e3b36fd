//! Bounded reading of the files a user (or a graph sent to a server) points lct at.
//!
//! Every file lct reads because someone named it (a config, an image, a graph, a model's JSON)
//! goes through [`read`] or [`check`]: it must be a regular file (not a device such as
//! `/dev/zero`, a FIFO or a folder), and no larger than the limit for its [`FileKind`]. Both
//! are checked before a byte is read, so a hostile path costs neither memory nor a blocked
//! thread. Images have a second bound, on the pixels their header declares
//! ([`MAX_IMAGE_PIXELS`]), checked by the decoders before they allocate.
//!
//! Depends on nothing but `std` and `thiserror`: the model engine, the nodes and the hosts all
//! use it, and it must stay below all of them.

use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

/// What a file is read as; each kind has its own size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A JSON document: graph, scene, model config, tokenizer, shard index.
    Json,
    /// An OCIO config (`config.ocio`, `.ocioz`).
    OcioConfig,
    /// A PNG, JPEG or EXR image.
    Image,
    /// A checkpoint's weights (safetensors), read whole only by lct's own small checkpoints.
    Weights,
}

impl FileKind {
    /// The largest file of this kind lct reads, in bytes.
    pub const fn limit(self) -> u64 {
        match self {
            // umT5's tokenizer.json, the largest JSON a supported checkpoint has, is 16.8 MiB.
            Self::Json => 64 * MIB,
            // The ACES studio config with its LUTs inlined is under 1 MiB.
            Self::OcioConfig => 16 * MIB,
            // A float RGBA EXR of MAX_IMAGE_PIXELS, uncompressed, is 1 GiB.
            Self::Image => 1024 * MIB,
            // Any real checkpoint; the bound that matters here is "a regular file".
            Self::Weights => 1024 * 1024 * MIB,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::OcioConfig => "OCIO config",
            Self::Image => "image",
            Self::Weights => "weights",
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The most pixels an image may declare in its header: 64 Mpx (8192 x 8192), 1 GiB as float
/// RGBA, the form lct keeps frames in.
pub const MAX_IMAGE_PIXELS: u64 = 1 << 26;

/// Why a file was not read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a regular file ({what}); {kind} files are read only from regular files", path.display())]
    NotRegular {
        path: PathBuf,
        what: &'static str,
        kind: FileKind,
    },
    #[error("{}: {size} bytes, over the {limit}-byte limit for {kind} files", path.display())]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
        kind: FileKind,
    },
    #[error("{}: the header declares {width}x{height} pixels, over the budget of {MAX_IMAGE_PIXELS} pixels (8192x8192) an image may have", path.display())]
    TooManyPixels {
        path: PathBuf,
        width: u64,
        height: u64,
    },
    #[error("{}: not UTF-8 text ({source})", path.display())]
    NotText {
        path: PathBuf,
        source: std::string::FromUtf8Error,
    },
}

fn file_type_name(metadata: &fs::Metadata) -> &'static str {
    let file_type = metadata.file_type();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
        if file_type.is_fifo() {
            return "a FIFO";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    if file_type.is_dir() {
        "a folder"
    } else {
        "not a file"
    }
}

fn check_metadata(path: &Path, metadata: &fs::Metadata, kind: FileKind) -> Result<u64, ReadError> {
    if !metadata.is_file() {
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            what: file_type_name(metadata),
            kind,
        });
    }
    let size = metadata.len();
    if size > kind.limit() {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit: kind.limit(),
            kind,
        });
    }
    Ok(size)
}

/// Checks, without opening it, that `path` is a regular file within the limit of `kind`;
/// returns its size. For readers that open the file themselves (OCIO, EXR).
pub fn check(path: &Path, kind: FileKind) -> Result<u64, ReadError> {
    // `metadata` follows links: the check is about the file that would be read. Not opening
    // it first matters: opening a FIFO blocks until someone writes.
    let metadata = fs::metadata(path).map_err(|source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    check_metadata(path, &metadata, kind)
}

/// The bytes of `path`, a regular file within the limit of `kind`. The limit is enforced on
/// the bytes read too, so a file that grows after the check is still cut off.
pub fn read(path: &Path, kind: FileKind) -> Result<Vec<u8>, ReadError> {
    check(path, kind)?;
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    // The file opened may not be the one checked (a rename in between): check it again.
    let size = check_metadata(path, &file.metadata().map_err(io)?, kind)?;
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(kind.limit() + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > kind.limit() {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit: kind.limit(),
            kind,
        });
    }
    Ok(bytes)
}

/// [`read`] as UTF-8 text.
pub fn read_to_string(path: &Path, kind: FileKind) -> Result<String, ReadError> {
    String::from_utf8(read(path, kind)?).map_err(|source| ReadError::NotText {
        path: path.to_path_buf(),
        source,
    })
}

/// Checks the pixel count an image's header declares against [`MAX_IMAGE_PIXELS`].
pub fn check_image_size(path: &Path, width: u64, height: u64) -> Result<(), ReadError> {
    match width.checked_mul(height) {
        Some(pixels) if pixels <= MAX_IMAGE_PIXELS => Ok(()),
        _ => Err(ReadError::TooManyPixels {
            path: path.to_path_buf(),
            width,
            height,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_folders_and_fifos_are_refused_by_what_they_are() {
        let error = read(Path::new("/dev/zero"), FileKind::OcioConfig).unwrap_err();
        assert_eq!(
            error.to_string(),
            "/dev/zero: not a regular file (a character device); OCIO config files are read \
             only from regular files"
        );
        let dir = tempfile::tempdir().unwrap();
        let error = read(dir.path(), FileKind::Json).unwrap_err();
        assert!(error.to_string().contains("(a folder)"), "{error}");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            // Would block forever if it were opened.
            let error = read(&fifo, FileKind::Json).unwrap_err();
            assert!(error.to_string().contains("(a FIFO)"), "{error}");
        }
    }

    #[test]
    fn a_file_over_its_kinds_limit_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.json");
        // Sparse: the size is claimed, no disk is used.
        File::create(&path)
            .unwrap()
            .set_len(FileKind::Json.limit() + 1)
            .unwrap();
        let error = read(&path, FileKind::Json).unwrap_err();
        assert!(
            matches!(error, ReadError::TooLarge { size, .. } if size == FileKind::Json.limit() + 1),
            "{error}"
        );
        assert!(
            error.to_string().contains("limit for JSON files"),
            "{error}"
        );
        fs::write(&path, b"{\"a\": 1}").unwrap();
        assert_eq!(read_to_string(&path, FileKind::Json).unwrap(), "{\"a\": 1}");
    }

    #[test]
    fn image_headers_are_held_to_the_pixel_budget() {
        let path = Path::new("x.png");
        check_image_size(path, 8192, 8192).unwrap();
        assert!(check_image_size(path, 8193, 8192).is_err());
        assert!(check_image_size(path, u64::MAX, 2).is_err());
    }
}
