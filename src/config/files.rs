//! Reading files of a bounded size: the configuration and the files it names.

use std::path::Path;

/// The largest key, certificate, CA or JWKS file read.
pub const MAX_SIDE_FILE: u64 = 1 << 20;

/// The largest configuration file read (100,000 routes fit).
pub(super) const MAX_CONFIG_FILE: u64 = 64 << 20;

/// Read a whole file of at most `limit` bytes: a larger one (or `/dev/zero`) is an
/// error at once rather than a read without end.
pub fn read_capped(path: impl AsRef<Path>, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {} KiB", limit / 1024),
        ));
    }
    Ok(bytes)
}
