//! Unpacking one layer: decompress, hash (compressed digest and diff ID) and unpack in a single
//! streaming pass into a temporary directory under `root/layers`, which the commit renames to
//! `root/layers/<diff-id-hex>` once every digest checked out.

use std::io::{self, Read};
use std::path::Path;

use tempfile::TempDir;

use crate::digest::{HashReader, SharedReader};
use crate::ImageError;

/// Errors of layer unpacking.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{what} cannot be unpacked: {source}")]
    Unpack {
        what: String,
        #[source]
        source: stasis_tar::TarError,
    },
    #[error("reading {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// What a layer must hash to; `None` fields are not checked (and only computed).
#[derive(Debug, Default)]
pub(crate) struct Expect<'a> {
    /// Digest of the blob as stored or sent (compressed), and who says so.
    pub compressed: Option<(&'a str, &'a str)>,
    /// Diff ID (digest of the uncompressed tar), and who says so.
    pub diff_id: Option<(&'a str, &'a str)>,
}

/// A layer unpacked into a temporary directory, digests verified.
#[derive(Debug)]
pub(crate) struct UnpackedLayer {
    pub diff_id: String,
    /// Uncompressed tar size in bytes.
    pub size: u64,
    /// `root/layers/.tmp-XXXX`, holding `diff/`; removed on drop unless committed.
    pub dir: TempDir,
}

/// Unpacks the (possibly compressed) layer tar `src` under `layers_dir`. `what` names the layer
/// in messages (`layer sha256:.. of archive x.tar`).
pub(crate) fn unpack_layer(
    src: Box<dyn Read + Send>,
    layers_dir: &Path,
    what: &str,
    expect: &Expect<'_>,
) -> Result<UnpackedLayer, ImageError> {
    let read_err = |source| LayerError::Read {
        what: what.to_string(),
        source,
    };
    let unpack_err = |source| LayerError::Unpack {
        what: what.to_string(),
        source,
    };
    let dir = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempdir_in(layers_dir)
        .map_err(ImageError::io(format!(
            "creating a temporary layer directory in {}",
            layers_dir.display()
        )))?;
    let diff = dir.path().join("diff");
    std::fs::create_dir(&diff).map_err(ImageError::io(format!("creating {}", diff.display())))?;

    let (hashing, compressed_hash) = HashReader::new(src);
    let mut shared = SharedReader::new(hashing);
    let (_compression, decompressed) =
        stasis_tar::decompress(shared.clone()).map_err(unpack_err)?;
    let (mut tar_stream, diff_hash) = HashReader::new(decompressed);
    let options = stasis_tar::UnpackOptions {
        overlay_whiteouts: true,
        preserve_ownership: true,
        allow_devices: false,
        ..Default::default()
    };
    stasis_tar::unpack(&mut tar_stream, &diff, &options).map_err(unpack_err)?;
    // The tar reader stops at the end-of-archive marker; the digests cover every byte.
    io::copy(&mut tar_stream, &mut io::sink()).map_err(read_err)?;
    drop(tar_stream);
    io::copy(&mut shared, &mut io::sink()).map_err(read_err)?;

    let (compressed, _) = compressed_hash.finish();
    let (diff_id, size) = diff_hash.finish();
    if let Some((expected, claimed_by)) = expect.compressed {
        if compressed != expected {
            return Err(ImageError::DigestMismatch {
                what: what.to_string(),
                actual: compressed,
                expected: expected.to_string(),
                claimed_by: claimed_by.to_string(),
            });
        }
    }
    if let Some((expected, claimed_by)) = expect.diff_id {
        if diff_id != expected {
            return Err(ImageError::DigestMismatch {
                what: format!("uncompressed {what}"),
                actual: diff_id,
                expected: expected.to_string(),
                claimed_by: claimed_by.to_string(),
            });
        }
    }
    Ok(UnpackedLayer { diff_id, size, dir })
}
