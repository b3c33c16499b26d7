//! sha256 digests: validation of `sha256:<hex>` strings and readers that hash what flows through.

use std::io::{self, Read};
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest as _, Sha256};

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// `true` for exactly 64 lower-case hex digits.
pub(crate) fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The hex part of a `sha256:<hex>` digest, `None` when it is not one.
pub(crate) fn sha256_hex(digest: &str) -> Option<&str> {
    digest.strip_prefix("sha256:").filter(|h| is_hex64(h))
}

/// `sha256:<hex>` of a byte slice.
pub(crate) fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

#[derive(Debug, Default)]
struct HashState {
    hasher: Sha256,
    count: u64,
}

/// Handle to the result of a [`HashReader`], usable after the reader was moved away
/// (for instance into a decompressor).
#[derive(Debug, Clone)]
pub(crate) struct HashHandle(Arc<Mutex<HashState>>);

impl HashHandle {
    /// `sha256:<hex>` and byte count of everything read so far.
    pub(crate) fn finish(&self) -> (String, u64) {
        let state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let digest = format!("sha256:{}", hex(&state.hasher.clone().finalize()));
        (digest, state.count)
    }
}

/// A reader that feeds every byte it passes on into a sha256 hasher.
pub(crate) struct HashReader<R> {
    inner: R,
    state: Arc<Mutex<HashState>>,
}

impl<R: Read> HashReader<R> {
    pub(crate) fn new(inner: R) -> (Self, HashHandle) {
        let state = Arc::new(Mutex::new(HashState::default()));
        let handle = HashHandle(Arc::clone(&state));
        (Self { inner, state }, handle)
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.hasher.update(&buf[..n]);
        state.count += n as u64;
        Ok(n)
    }
}

/// Shares one reader between the decompressor (which may stop before the end of its input, for
/// instance after the last gzip member) and the caller, who drains the rest afterwards so that
/// the compressed digest covers the whole blob.
pub(crate) struct SharedReader<R>(Arc<Mutex<R>>);

impl<R> SharedReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self(Arc::new(Mutex::new(inner)))
    }
}

impl<R> Clone for SharedReader<R> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<R: Read> Read for SharedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read(buf)
    }
}

/// Reads at most `limit` bytes of a small JSON blob (manifests, configs); more is an error so a
/// hostile source cannot make us allocate without bound.
pub(crate) fn read_limited(r: &mut dyn Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than the {limit} bytes allowed for metadata"),
        ));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_what_passes() {
        let (mut r, h) = HashReader::new(&b"abc"[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(
            h.finish(),
            (
                "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
                3
            )
        );
        assert_eq!(sha256_of(b"abc"), h.finish().0);
    }

    #[test]
    fn digest_syntax() {
        let h = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex(&format!("sha256:{h}")), Some(h));
        assert_eq!(sha256_hex(h), None);
        assert_eq!(sha256_hex("sha256:BA78"), None);
        assert!(read_limited(&mut &b"12345"[..], 4).is_err());
        assert_eq!(read_limited(&mut &b"1234"[..], 4).unwrap(), b"1234");
    }
}
