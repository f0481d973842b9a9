//! MessagePack as HashiCorp's go-msgpack writes it for memberlist and Serf.
//!
//! Facts (docs/gossip-facts/memberlist.md): structs are maps keyed by Go field names, the keys in
//! sorted order; strings and byte slices are the legacy *raw* family (fixraw `0xa0..`, raw16 `0xda`,
//! raw32 `0xdb`), never str8 or bin; integers take their smallest form. A decoder must accept every
//! form, since other writers (and newer go-msgpack) emit str8/bin.
//!
//! Everything read from the network passes through [`Dec`], which never panics: every length is
//! checked against what is left, nesting is bounded, and a short buffer is [`Error::Incomplete`] (a
//! stream reader uses that to wait for more bytes).

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The buffer ended inside a value.
    Incomplete,
    /// The bytes are not what was expected.
    Invalid(&'static str),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Incomplete => f.write_str("truncated message"),
            Error::Invalid(what) => write!(f, "malformed message: {what}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

const MAX_DEPTH: usize = 32;

/// A writer of the go-msgpack flavour.
#[derive(Default, Debug)]
pub struct Enc {
    pub buf: Vec<u8>,
}

impl Enc {
    pub fn new() -> Self {
        Enc { buf: Vec::with_capacity(64) }
    }
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
    pub fn nil(&mut self) {
        self.buf.push(0xc0);
    }
    pub fn bool(&mut self, v: bool) {
        self.buf.push(if v { 0xc3 } else { 0xc2 });
    }
    pub fn uint(&mut self, v: u64) {
        if v < 0x80 {
            self.buf.push(v as u8);
        } else if v <= u8::MAX as u64 {
            self.buf.extend_from_slice(&[0xcc, v as u8]);
        } else if v <= u16::MAX as u64 {
            self.buf.push(0xcd);
            self.buf.extend_from_slice(&(v as u16).to_be_bytes());
        } else if v <= u32::MAX as u64 {
            self.buf.push(0xce);
            self.buf.extend_from_slice(&(v as u32).to_be_bytes());
        } else {
            self.buf.push(0xcf);
            self.buf.extend_from_slice(&v.to_be_bytes());
        }
    }
    pub fn int(&mut self, v: i64) {
        if v >= 0 {
            // go-msgpack writes a non-negative signed integer in the unsigned forms.
            self.uint(v as u64);
        } else if v >= -32 {
            self.buf.push(v as i8 as u8);
        } else if v >= i8::MIN as i64 {
            self.buf.extend_from_slice(&[0xd0, v as i8 as u8]);
        } else if v >= i16::MIN as i64 {
            self.buf.push(0xd1);
            self.buf.extend_from_slice(&(v as i16).to_be_bytes());
        } else if v >= i32::MIN as i64 {
            self.buf.push(0xd2);
            self.buf.extend_from_slice(&(v as i32).to_be_bytes());
        } else {
            self.buf.push(0xd3);
            self.buf.extend_from_slice(&v.to_be_bytes());
        }
    }
    pub fn f64(&mut self, v: f64) {
        self.buf.push(0xcb);
        self.buf.extend_from_slice(&v.to_bits().to_be_bytes());
    }
    /// A raw (string or byte slice).
    pub fn raw(&mut self, v: &[u8]) {
        let n = v.len();
        if n < 32 {
            self.buf.push(0xa0 | n as u8);
        } else if n <= u16::MAX as usize {
            self.buf.push(0xda);
            self.buf.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            self.buf.push(0xdb);
            self.buf.extend_from_slice(&(n as u32).to_be_bytes());
        }
        self.buf.extend_from_slice(v);
    }
    pub fn str(&mut self, v: &str) {
        self.raw(v.as_bytes());
    }
    pub fn array_len(&mut self, n: usize) {
        if n < 16 {
            self.buf.push(0x90 | n as u8);
        } else if n <= u16::MAX as usize {
            self.buf.push(0xdc);
            self.buf.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            self.buf.push(0xdd);
            self.buf.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    pub fn map_len(&mut self, n: usize) {
        if n < 16 {
            self.buf.push(0x80 | n as u8);
        } else if n <= u16::MAX as usize {
            self.buf.push(0xde);
            self.buf.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            self.buf.push(0xdf);
            self.buf.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
}

/// A reader over untrusted bytes.
#[derive(Debug, Clone)]
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Dec { buf, pos: 0, depth: 0 }
    }
    pub fn position(&self) -> usize {
        self.pos
    }
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(Error::Incomplete);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn peek(&self) -> Result<u8> {
        self.buf.get(self.pos).copied().ok_or(Error::Incomplete)
    }
    fn be(&mut self, n: usize) -> Result<u64> {
        Ok(self.take(n)?.iter().fold(0u64, |a, b| (a << 8) | *b as u64))
    }
    pub fn is_nil(&self) -> bool {
        self.peek().ok() == Some(0xc0)
    }
    pub fn nil(&mut self) -> Result<()> {
        match self.byte()? {
            0xc0 => Ok(()),
            _ => Err(Error::Invalid("expected nil")),
        }
    }
    pub fn bool(&mut self) -> Result<bool> {
        match self.byte()? {
            0xc2 => Ok(false),
            0xc3 => Ok(true),
            _ => Err(Error::Invalid("expected bool")),
        }
    }
    /// Any integer form, as i128 so both signed and unsigned fit.
    fn integer(&mut self) -> Result<i128> {
        let b = self.byte()?;
        Ok(match b {
            0x00..=0x7f => b as i128,
            0xe0..=0xff => b as i8 as i128,
            0xcc => self.be(1)? as i128,
            0xcd => self.be(2)? as i128,
            0xce => self.be(4)? as i128,
            0xcf => self.be(8)? as i128,
            0xd0 => self.be(1)? as u8 as i8 as i128,
            0xd1 => self.be(2)? as u16 as i16 as i128,
            0xd2 => self.be(4)? as u32 as i32 as i128,
            0xd3 => self.be(8)? as i64 as i128,
            // go-msgpack decodes nil into a zero integer.
            0xc0 => 0,
            _ => return Err(Error::Invalid("expected integer")),
        })
    }
    pub fn uint(&mut self, max: u64) -> Result<u64> {
        let v = self.integer()?;
        if v < 0 || v > max as i128 {
            return Err(Error::Invalid("integer out of range"));
        }
        Ok(v as u64)
    }
    pub fn int(&mut self) -> Result<i64> {
        let v = self.integer()?;
        i64::try_from(v).map_err(|_| Error::Invalid("integer out of range"))
    }
    pub fn f64(&mut self) -> Result<f64> {
        match self.peek()? {
            0xcb => {
                self.pos += 1;
                Ok(f64::from_bits(self.be(8)?))
            }
            0xca => {
                self.pos += 1;
                Ok(f32::from_bits(self.be(4)? as u32) as f64)
            }
            _ => Ok(self.int()? as f64),
        }
    }
    /// A raw, str or bin value (nil reads as empty, as go-msgpack decodes it).
    pub fn raw(&mut self) -> Result<&'a [u8]> {
        let b = self.byte()?;
        let n = match b {
            0xa0..=0xbf => (b & 0x1f) as usize,
            0xd9 | 0xc4 => self.be(1)? as usize,
            0xda | 0xc5 => self.be(2)? as usize,
            0xdb | 0xc6 => self.be(4)? as usize,
            0xc0 => 0,
            _ => return Err(Error::Invalid("expected string or bytes")),
        };
        self.take(n)
    }
    pub fn string(&mut self) -> Result<String> {
        let r = self.raw()?;
        // Go strings may hold any bytes; keep them readable rather than refuse the message.
        Ok(String::from_utf8_lossy(r).into_owned())
    }
    /// An array header; nil is an empty array.
    pub fn array_len(&mut self) -> Result<usize> {
        let b = self.byte()?;
        let n = match b {
            0x90..=0x9f => (b & 0x0f) as usize,
            0xdc => self.be(2)? as usize,
            0xdd => self.be(4)? as usize,
            0xc0 => 0,
            _ => return Err(Error::Invalid("expected array")),
        };
        // Every element takes at least one byte: a longer claim is a lie or a truncation.
        if n > self.buf.len() - self.pos {
            return Err(Error::Incomplete);
        }
        Ok(n)
    }
    pub fn map_len(&mut self) -> Result<usize> {
        let b = self.byte()?;
        let n = match b {
            0x80..=0x8f => (b & 0x0f) as usize,
            0xde => self.be(2)? as usize,
            0xdf => self.be(4)? as usize,
            0xc0 => 0,
            _ => return Err(Error::Invalid("expected map")),
        };
        if n.saturating_mul(2) > self.buf.len() - self.pos {
            return Err(Error::Incomplete);
        }
        Ok(n)
    }
    /// Skips one value of any type.
    pub fn skip(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Error::Invalid("nesting too deep"));
        }
        let b = self.peek()?;
        match b {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => {
                self.pos += 1;
            }
            0xcc | 0xd0 => drop(self.take(2)?),
            0xcd | 0xd1 => drop(self.take(3)?),
            0xce | 0xd2 | 0xca => drop(self.take(5)?),
            0xcf | 0xd3 | 0xcb => drop(self.take(9)?),
            0xa0..=0xbf | 0xd9 | 0xda | 0xdb | 0xc4 | 0xc5 | 0xc6 => drop(self.raw()?),
            0x90..=0x9f | 0xdc | 0xdd => {
                for _ in 0..self.array_len()? {
                    self.skip()?;
                }
            }
            0x80..=0x8f | 0xde | 0xdf => {
                for _ in 0..self.map_len()? * 2 {
                    self.skip()?;
                }
            }
            0xd4 => drop(self.take(3)?),
            0xd5 => drop(self.take(4)?),
            0xd6 => drop(self.take(6)?),
            0xd7 => drop(self.take(10)?),
            0xd8 => drop(self.take(18)?),
            0xc7..=0xc9 => {
                self.pos += 1;
                let n = self.be(match b {
                    0xc7 => 1,
                    0xc8 => 2,
                    _ => 4,
                })? as usize;
                self.take(n + 1)?;
            }
            0xc1 => return Err(Error::Invalid("reserved byte")),
        }
        self.depth -= 1;
        Ok(())
    }
}

/// A type that travels as one msgpack value in go-msgpack's flavour.
pub trait Wire: Sized {
    fn encode(&self, e: &mut Enc);
    fn decode(d: &mut Dec<'_>) -> Result<Self>;
    /// Whether go-msgpack's `omitempty` would leave this value out.
    fn is_empty_value(&self) -> bool {
        false
    }
}

macro_rules! wire_uint {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            fn encode(&self, e: &mut Enc) { e.uint(*self as u64) }
            fn decode(d: &mut Dec<'_>) -> Result<Self> { Ok(d.uint(<$t>::MAX as u64)? as $t) }
            fn is_empty_value(&self) -> bool { *self == 0 }
        }
    )*};
}
wire_uint!(u8, u16, u32, u64);

impl Wire for i64 {
    fn encode(&self, e: &mut Enc) {
        e.int(*self)
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self> {
        d.int()
    }
    fn is_empty_value(&self) -> bool {
        *self == 0
    }
}

impl Wire for f64 {
    fn encode(&self, e: &mut Enc) {
        e.f64(*self)
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self> {
        d.f64()
    }
    fn is_empty_value(&self) -> bool {
        *self == 0.0
    }
}

impl Wire for bool {
    fn encode(&self, e: &mut Enc) {
        e.bool(*self)
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self> {
        if d.is_nil() {
            d.nil()?;
            return Ok(false);
        }
        d.bool()
    }
    fn is_empty_value(&self) -> bool {
        !*self
    }
}

impl Wire for String {
    fn encode(&self, e: &mut Enc) {
        e.str(self)
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self> {
        d.string()
    }
    fn is_empty_value(&self) -> bool {
        self.is_empty()
    }
}

/// A Go `[]byte` (also `[]uint8`, which go-msgpack writes as a raw too).
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bytes(pub Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

impl std::ops::Deref for Bytes {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(v)
    }
}

impl Wire for Bytes {
    fn encode(&self, e: &mut Enc) {
        e.raw(&self.0)
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self> {
        // Accept an array of small integers too (a writer that treats []uint8 as a list).
        if matches!(d.peek()?, 0x90..=0x9f | 0xdc | 0xdd) {
            let n = d.array_len()?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(d.uint(u8::MAX as u64)? as u8);
            }
            return Ok(Bytes(v));
        }
        Ok(Bytes(d.raw()?.to_vec()))
    }
    fn is_empty_value(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T: Wire> Wire for Vec<T> {
    fn encode(&self, e: &mut Enc) {
        e.array_len(self.len());
        for v in self {
            v.encode(e);
        }
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self> {
        let n = d.array_len()?;
        let mut v = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            v.push(T::decode(d)?);
        }
        Ok(v)
    }
    fn is_empty_value(&self) -> bool {
        self.is_empty()
    }
}

impl<T: Wire> Wire for BTreeMap<String, T> {
    fn encode(&self, e: &mut Enc) {
        e.map_len(self.len());
        for (k, v) in self {
            e.str(k);
            v.encode(e);
        }
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self> {
        let n = d.map_len()?;
        let mut m = BTreeMap::new();
        for _ in 0..n {
            let k = d.string()?;
            m.insert(k, T::decode(d)?);
        }
        Ok(m)
    }
    fn is_empty_value(&self) -> bool {
        self.is_empty()
    }
}

impl<T: Wire> Wire for Option<T> {
    fn encode(&self, e: &mut Enc) {
        match self {
            Some(v) => v.encode(e),
            None => e.nil(),
        }
    }
    fn decode(d: &mut Dec<'_>) -> Result<Self> {
        if d.is_nil() {
            d.nil()?;
            return Ok(None);
        }
        Ok(Some(T::decode(d)?))
    }
    fn is_empty_value(&self) -> bool {
        self.is_none()
    }
}

/// Decodes one value from the whole of `buf` (trailing bytes are allowed: Go's decoder stops after
/// one value, and memberlist packs a user message behind some headers).
pub fn decode<T: Wire>(buf: &[u8]) -> Result<T> {
    T::decode(&mut Dec::new(buf))
}

pub fn encode<T: Wire>(v: &T) -> Vec<u8> {
    let mut e = Enc::new();
    v.encode(&mut e);
    e.into_vec()
}

/// Declares a struct that travels as a go-msgpack map: fields are written in the order given (which
/// must be sorted by wire name, as go-msgpack sorts them), read in any order, unknown keys skipped.
/// A field marked `[omitempty]` is left out when it has its zero value.
#[macro_export]
macro_rules! wire_struct {
    (
        $(#[$m:meta])*
        pub struct $name:ident {
            $( $(#[$fm:meta])* $wire:literal $([$omit:ident])? => pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct $name {
            $( $(#[$fm])* pub $field: $ty, )*
        }

        impl $crate::msgpack::Wire for $name {
            fn encode(&self, e: &mut $crate::msgpack::Enc) {
                #[allow(unused_mut)]
                let mut n = 0usize;
                $( if !($crate::wire_struct!(@omit $($omit)?) && $crate::msgpack::Wire::is_empty_value(&self.$field)) { n += 1; } )*
                e.map_len(n);
                $(
                    if !($crate::wire_struct!(@omit $($omit)?) && $crate::msgpack::Wire::is_empty_value(&self.$field)) {
                        e.str($wire);
                        $crate::msgpack::Wire::encode(&self.$field, e);
                    }
                )*
            }
            fn decode(d: &mut $crate::msgpack::Dec<'_>) -> $crate::msgpack::Result<Self> {
                let mut v = Self::default();
                let n = d.map_len()?;
                for _ in 0..n {
                    let k = d.raw()?;
                    match k {
                        $( k if k == $wire.as_bytes() => v.$field = $crate::msgpack::Wire::decode(d)?, )*
                        _ => d.skip()?,
                    }
                }
                Ok(v)
            }
        }
    };
    (@omit omitempty) => { true };
    (@omit) => { false };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_forms() {
        let mut e = Enc::new();
        e.str(&"x".repeat(40));
        assert_eq!(&e.buf[..3], &[0xda, 0, 40]);
        let mut d = Dec::new(&e.buf);
        assert_eq!(d.raw().unwrap().len(), 40);
        // str8 and bin8 are accepted.
        assert_eq!(Dec::new(&[0xd9, 1, b'a']).raw().unwrap(), b"a");
        assert_eq!(Dec::new(&[0xc4, 1, b'a']).raw().unwrap(), b"a");
    }

    #[test]
    fn ints_round_trip() {
        for v in [0i64, 1, 127, 128, 255, 256, 65535, 65536, -1, -32, -33, -129, -40000, i64::MIN, i64::MAX] {
            let mut e = Enc::new();
            e.int(v);
            assert_eq!(Dec::new(&e.buf).int().unwrap(), v, "{v}");
        }
    }

    #[test]
    fn hostile_lengths() {
        assert_eq!(Dec::new(&[0xdd, 0xff, 0xff, 0xff, 0xff]).array_len(), Err(Error::Incomplete));
        assert_eq!(Dec::new(&[0xdb, 0xff, 0xff, 0xff, 0xff, 1]).raw(), Err(Error::Incomplete));
        let deep = vec![0x91u8; 100];
        assert!(Dec::new(&deep).skip().is_err());
    }
}
