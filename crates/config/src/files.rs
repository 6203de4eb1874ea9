//! Where secret files (the TLS certificate and key, the DKIM keys) are read from: the
//! filesystem ([`Disk`]), or, once the daemon has dropped root, its privileged helper, which
//! hands over the bytes of the files the configuration names (`postern::privsep`). The loaders
//! of those files take a [`FileSource`], so a reload under `[server] user` can use root-only
//! keys such as certbot's `privkey.pem`.

use std::path::{Path, PathBuf};

use crate::Config;

/// Reads a file's bytes.
pub trait FileSource {
    /// The whole content of `path`.
    ///
    /// # Errors
    /// The file cannot be read (missing, permission denied), or the source does not hold it.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
}

/// The filesystem, as the process sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Disk;

impl FileSource for Disk {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

/// The secret files `config` names, in a fixed order: `[tls]` cert and key, each `[[tls.sni]]`
/// pair, each `[[dkim.key]]`.
pub fn secret_files(config: &Config) -> Vec<PathBuf> {
    let tls = &config.tls;
    let pairs = tls.cert.iter().zip(&tls.key).map(|(c, k)| (c.clone(), k.clone()));
    pairs
        .chain(tls.sni.iter().map(|p| (p.cert.clone(), p.key.clone())))
        .flat_map(|(c, k)| [c, k])
        .chain(config.dkim.key.iter().map(|k| k.private_key.clone()))
        .collect()
}
