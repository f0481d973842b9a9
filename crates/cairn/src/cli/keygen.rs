//! `cairn keygen`: prints a new gossip encryption key, as `consul keygen` does: 32 bytes from the
//! operating system's CSPRNG, base64 (standard alphabet, padded, so 44 characters), and a newline.
//!
//! This module also owns [`random_bytes`], the one place the CLI reads the OS random source
//! (`tls` uses it for certificate serial numbers).

use std::io::{ErrorKind, Read};

use anyhow::{anyhow, Result};
use base64::Engine as _;

/// How many random bytes make a key: 32 gives an AES-256 key (Consul before 1.x used 16).
const KEY_LEN: usize = 32;

/// Reads `N` bytes from the kernel's CSPRNG.
///
/// `/dev/urandom` rather than a crate: it is what Go's `crypto/rand` reads on the platforms we
/// build for, it needs no API beyond std, and after boot it never blocks or runs dry. The error
/// texts are Consul's, since `keygen` prints them as they are.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    let mut f = std::fs::File::open("/dev/urandom").map_err(|e| anyhow!("Error reading random data: {e}"))?;
    f.read_exact(&mut buf).map_err(|e| {
        if e.kind() == ErrorKind::UnexpectedEof {
            anyhow!("Couldn't read enough entropy. Generate more entropy!")
        } else {
            anyhow!("Error reading random data: {e}")
        }
    })?;
    Ok(buf)
}

/// A new key, base64-encoded the way Consul's agents expect it in `encrypt`.
pub fn generate() -> Result<String> {
    let key = random_bytes::<KEY_LEN>()?;
    Ok(base64::engine::general_purpose::STANDARD.encode(key))
}

/// Runs `cairn keygen`; returns the exit code.
pub fn run() -> Result<i32> {
    match generate() {
        Ok(key) => {
            println!("{key}");
            Ok(0)
        }
        Err(e) => {
            // Consul prints these without the generic "Error! " prefix.
            eprintln!("{e:#}");
            Ok(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    #[test]
    fn keys_are_44_chars_of_32_random_bytes() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 44);
        assert!(a.ends_with('='));
        let raw = base64::engine::general_purpose::STANDARD.decode(&a).unwrap();
        assert_eq!(raw.len(), 32);
        assert_ne!(a, b, "two keys must differ");
    }
}
