//! The gossip keyring: AES-GCM with 16, 24 or 32-byte keys, as memberlist encrypts.
//!
//! An encrypted payload is `[version][12-byte nonce][ciphertext][16-byte tag]`. Version 0 pads the
//! plaintext PKCS#7-style to the AES block size first; version 1 does not. The label (if any) is the
//! associated data. Decryption tries every installed key, the primary first; sending uses the
//! primary.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes192;
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm};

type Aes192Gcm = AesGcm<Aes192, aes_gcm::aead::consts::U12>;

pub const NONCE_SIZE: usize = 12;
pub const TAG_SIZE: usize = 16;
const BLOCK: usize = 16;
/// version + nonce + tag
pub const OVERHEAD: usize = 1 + NONCE_SIZE + TAG_SIZE;

#[derive(Clone)]
enum Cipher {
    A128(Box<Aes128Gcm>),
    A192(Box<Aes192Gcm>),
    A256(Box<Aes256Gcm>),
}

impl Cipher {
    fn new(key: &[u8]) -> Option<Cipher> {
        Some(match key.len() {
            16 => Cipher::A128(Box::new(Aes128Gcm::new_from_slice(key).ok()?)),
            24 => Cipher::A192(Box::new(Aes192Gcm::new_from_slice(key).ok()?)),
            32 => Cipher::A256(Box::new(Aes256Gcm::new_from_slice(key).ok()?)),
            _ => return None,
        })
    }

    fn seal(&self, nonce: &[u8; NONCE_SIZE], msg: &[u8], aad: &[u8]) -> Vec<u8> {
        let p = Payload { msg, aad };
        let n = nonce.into();
        let r = match self {
            Cipher::A128(c) => c.encrypt(n, p),
            Cipher::A192(c) => c.encrypt(n, p),
            Cipher::A256(c) => c.encrypt(n, p),
        };
        // Encryption fails only for inputs beyond GCM's limits (64 GiB), which we never build.
        r.unwrap_or_default()
    }

    fn open(&self, nonce: &[u8], ct: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        let p = Payload { msg: ct, aad };
        let n: &[u8; NONCE_SIZE] = nonce.try_into().ok()?;
        let n = n.into();
        match self {
            Cipher::A128(c) => c.decrypt(n, p),
            Cipher::A192(c) => c.decrypt(n, p),
            Cipher::A256(c) => c.decrypt(n, p),
        }
        .ok()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyError {
    BadLength(usize),
    NotInstalled,
    RemovePrimary,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::BadLength(n) => write!(f, "key size must be 16, 24 or 32 bytes, got {n}"),
            KeyError::NotInstalled => f.write_str("Requested key is not in the keyring"),
            KeyError::RemovePrimary => f.write_str("Removing the primary key is not allowed"),
        }
    }
}

impl std::error::Error for KeyError {}

/// The installed keys; `keys[0]` is the primary.
#[derive(Clone, Default)]
pub struct Keyring {
    keys: Vec<(Vec<u8>, Cipher)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({} keys)", self.keys.len())
    }
}

impl Keyring {
    pub fn new(primary: &[u8], others: &[Vec<u8>]) -> Result<Keyring, KeyError> {
        let mut k = Keyring::default();
        for key in others {
            k.add(key)?;
        }
        k.add(primary)?;
        k.use_key(primary)?;
        Ok(k)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Installs a key (not as primary). Installing a present key does nothing.
    pub fn add(&mut self, key: &[u8]) -> Result<(), KeyError> {
        let c = Cipher::new(key).ok_or(KeyError::BadLength(key.len()))?;
        if !self.keys.iter().any(|(k, _)| k == key) {
            self.keys.push((key.to_vec(), c));
        }
        Ok(())
    }

    pub fn use_key(&mut self, key: &[u8]) -> Result<(), KeyError> {
        let i = self.keys.iter().position(|(k, _)| k == key).ok_or(KeyError::NotInstalled)?;
        let e = self.keys.remove(i);
        self.keys.insert(0, e);
        Ok(())
    }

    pub fn remove(&mut self, key: &[u8]) -> Result<(), KeyError> {
        match self.keys.iter().position(|(k, _)| k == key) {
            Some(0) => Err(KeyError::RemovePrimary),
            Some(i) => {
                self.keys.remove(i);
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.keys.iter().map(|(k, _)| k.as_slice())
    }

    pub fn primary(&self) -> Option<&[u8]> {
        self.keys.first().map(|(k, _)| k.as_slice())
    }

    /// Encrypts with the primary key; `nonce` must be fresh random bytes.
    pub fn encrypt(&self, version: u8, nonce: [u8; NONCE_SIZE], msg: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        let (_, c) = self.keys.first()?;
        let mut out = Vec::with_capacity(OVERHEAD + msg.len() + BLOCK);
        out.push(version);
        out.extend_from_slice(&nonce);
        let sealed = if version == 0 {
            let pad = BLOCK - msg.len() % BLOCK;
            let mut padded = Vec::with_capacity(msg.len() + pad);
            padded.extend_from_slice(msg);
            padded.resize(msg.len() + pad, pad as u8);
            c.seal(&nonce, &padded, aad)
        } else {
            c.seal(&nonce, msg, aad)
        };
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// Decrypts with whichever key opens it.
    pub fn decrypt(&self, buf: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        if buf.len() < OVERHEAD {
            return None;
        }
        let version = buf[0];
        if version > 1 {
            return None;
        }
        let (nonce, ct) = buf[1..].split_at(NONCE_SIZE);
        for (_, c) in &self.keys {
            if let Some(mut plain) = c.open(nonce, ct, aad) {
                if version == 0 {
                    let pad = *plain.last()? as usize;
                    if pad == 0 || pad > BLOCK || pad > plain.len() {
                        return None;
                    }
                    plain.truncate(plain.len() - pad);
                }
                return Some(plain);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_sizes_and_versions() {
        for n in [16, 24, 32] {
            let key: Vec<u8> = (0..n as u8).collect();
            let ring = Keyring::new(&key, &[]).unwrap();
            for v in [0, 1] {
                let ct = ring.encrypt(v, [7; 12], b"hello", b"label").unwrap();
                assert_eq!(ring.decrypt(&ct, b"label").unwrap(), b"hello");
                assert!(ring.decrypt(&ct, b"other").is_none());
            }
        }
        assert_eq!(Keyring::new(&[1; 15], &[]).err(), Some(KeyError::BadLength(15)));
    }

    #[test]
    fn secondary_keys_decrypt_and_primary_is_protected() {
        let a = vec![1u8; 16];
        let b = vec![2u8; 16];
        let sender = Keyring::new(&b, &[]).unwrap();
        let mut recv = Keyring::new(&a, std::slice::from_ref(&b)).unwrap();
        let ct = sender.encrypt(1, [0; 12], b"x", b"").unwrap();
        assert_eq!(recv.decrypt(&ct, b"").unwrap(), b"x");
        assert_eq!(recv.remove(&a), Err(KeyError::RemovePrimary));
        recv.remove(&b).unwrap();
        assert!(recv.decrypt(&ct, b"").is_none());
    }
}
