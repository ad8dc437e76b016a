//! A minimal MessagePack writer and a strict, allocation-free reader.
//!
//! The writer always picks the smallest encoding of a value (that is what
//! makes the deltas compact: an id or a small coordinate step is one byte).
//! The reader never allocates and never trusts a length prefix: every length is
//! checked against the bytes actually present, so hostile input cannot make it
//! reserve memory or loop.

/// Appends an unsigned integer in its smallest MessagePack form.
#[inline]
pub(crate) fn put_uint(out: &mut Vec<u8>, v: u64) {
    if v < 128 {
        out.push(v as u8);
    } else if v <= u8::MAX as u64 {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v <= u16::MAX as u64 {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= u32::MAX as u64 {
        out.push(0xce);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Appends a signed integer in its smallest MessagePack form (non-negative
/// values use the unsigned forms, as every MessagePack encoder does).
#[inline]
pub(crate) fn put_int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        put_uint(out, v as u64);
    } else if v >= -32 {
        out.push(v as i8 as u8);
    } else if v >= i8::MIN as i64 {
        out.extend_from_slice(&[0xd0, v as i8 as u8]);
    } else if v >= i16::MIN as i64 {
        out.push(0xd1);
        out.extend_from_slice(&(v as i16).to_be_bytes());
    } else if v >= i32::MIN as i64 {
        out.push(0xd2);
        out.extend_from_slice(&(v as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

pub(crate) fn put_nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

pub(crate) fn put_bool(out: &mut Vec<u8>, v: bool) {
    out.push(if v { 0xc3 } else { 0xc2 });
}

pub(crate) fn put_f32(out: &mut Vec<u8>, v: f32) {
    out.push(0xca);
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = s.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if len <= u8::MAX as usize {
        out.extend_from_slice(&[0xd9, len as u8]);
    } else if len <= u16::MAX as usize {
        out.push(0xda);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn put_array_len(out: &mut Vec<u8>, len: u32) {
    if len < 16 {
        out.push(0x90 | len as u8);
    } else if len <= u16::MAX as u32 {
        out.push(0xdc);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

pub(crate) fn put_map_len(out: &mut Vec<u8>, len: u32) {
    if len < 16 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as u32 {
        out.push(0xde);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdf);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

/// Why a [`Reader`] call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The bytes end inside a value, or a marker is not MessagePack at all.
    Malformed,
    /// A well-formed value of another type than the one expected.
    WrongType,
}

/// A strict cursor over MessagePack bytes. Nothing it returns borrows more than
/// the input, and no length prefix is trusted beyond the bytes that remain.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// True once every byte has been consumed.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn peek(&self) -> Result<u8, ReadError> {
        self.buf.get(self.pos).copied().ok_or(ReadError::Malformed)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        let end = self.pos.checked_add(n).ok_or(ReadError::Malformed)?;
        let s = self.buf.get(self.pos..end).ok_or(ReadError::Malformed)?;
        self.pos = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, ReadError> {
        let mut v = 0u64;
        for &b in self.take(n)? {
            v = (v << 8) | b as u64;
        }
        Ok(v)
    }

    /// Reads a map header and returns its number of entries.
    pub(crate) fn map_len(&mut self) -> Result<u32, ReadError> {
        let m = self.peek()?;
        let len = match m {
            0x80..=0x8f => {
                self.pos += 1;
                (m & 0x0f) as u32
            }
            0xde => {
                self.pos += 1;
                self.be(2)? as u32
            }
            0xdf => {
                self.pos += 1;
                self.be(4)? as u32
            }
            0xc1 => return Err(ReadError::Malformed),
            _ => return Err(ReadError::WrongType),
        };
        // Every entry takes at least two bytes.
        if (len as usize).saturating_mul(2) > self.buf.len() - self.pos {
            return Err(ReadError::Malformed);
        }
        Ok(len)
    }

    /// Reads an array header and returns its number of elements.
    pub(crate) fn array_len(&mut self) -> Result<u32, ReadError> {
        let m = self.peek()?;
        let len = match m {
            0x90..=0x9f => {
                self.pos += 1;
                (m & 0x0f) as u32
            }
            0xdc => {
                self.pos += 1;
                self.be(2)? as u32
            }
            0xdd => {
                self.pos += 1;
                self.be(4)? as u32
            }
            0xc1 => return Err(ReadError::Malformed),
            _ => return Err(ReadError::WrongType),
        };
        if len as usize > self.buf.len() - self.pos {
            return Err(ReadError::Malformed);
        }
        Ok(len)
    }

    /// Reads a UTF-8 string of at most `max` bytes.
    pub(crate) fn str(&mut self, max: usize) -> Result<&'a str, ReadError> {
        let m = self.peek()?;
        let len = match m {
            0xa0..=0xbf => {
                self.pos += 1;
                (m & 0x1f) as usize
            }
            0xd9 => {
                self.pos += 1;
                self.be(1)? as usize
            }
            0xda => {
                self.pos += 1;
                self.be(2)? as usize
            }
            0xdb => {
                self.pos += 1;
                self.be(4)? as usize
            }
            0xc1 => return Err(ReadError::Malformed),
            _ => return Err(ReadError::WrongType),
        };
        if len > max {
            return Err(ReadError::WrongType);
        }
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| ReadError::WrongType)
    }

    /// Reads an integer (any MessagePack int or uint form).
    pub(crate) fn int(&mut self) -> Result<i128, ReadError> {
        let m = self.peek()?;
        let v = match m {
            0x00..=0x7f => {
                self.pos += 1;
                m as i128
            }
            0xe0..=0xff => {
                self.pos += 1;
                m as i8 as i128
            }
            0xcc => {
                self.pos += 1;
                self.be(1)? as i128
            }
            0xcd => {
                self.pos += 1;
                self.be(2)? as i128
            }
            0xce => {
                self.pos += 1;
                self.be(4)? as i128
            }
            0xcf => {
                self.pos += 1;
                self.be(8)? as i128
            }
            0xd0 => {
                self.pos += 1;
                self.be(1)? as u8 as i8 as i128
            }
            0xd1 => {
                self.pos += 1;
                self.be(2)? as u16 as i16 as i128
            }
            0xd2 => {
                self.pos += 1;
                self.be(4)? as u32 as i32 as i128
            }
            0xd3 => {
                self.pos += 1;
                self.be(8)? as i64 as i128
            }
            0xc1 => return Err(ReadError::Malformed),
            _ => return Err(ReadError::WrongType),
        };
        Ok(v)
    }

    /// Reads a number: any integer form, float 32 or float 64.
    pub(crate) fn number(&mut self) -> Result<f64, ReadError> {
        match self.peek()? {
            0xca => {
                self.pos += 1;
                Ok(f32::from_bits(self.be(4)? as u32) as f64)
            }
            0xcb => {
                self.pos += 1;
                Ok(f64::from_bits(self.be(8)?))
            }
            _ => self.int().map(|v| v as f64),
        }
    }

    /// Reads a boolean.
    pub(crate) fn bool(&mut self) -> Result<bool, ReadError> {
        match self.peek()? {
            0xc2 => {
                self.pos += 1;
                Ok(false)
            }
            0xc3 => {
                self.pos += 1;
                Ok(true)
            }
            0xc1 => Err(ReadError::Malformed),
            _ => Err(ReadError::WrongType),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_forms() {
        let mut v = Vec::new();
        put_uint(&mut v, 5);
        put_int(&mut v, -5);
        put_int(&mut v, 127);
        put_uint(&mut v, 200);
        put_int(&mut v, -100);
        put_uint(&mut v, 70_000);
        assert_eq!(
            v,
            [5, 0xfb, 127, 0xcc, 200, 0xd0, 0x9c, 0xce, 0, 1, 0x11, 0x70]
        );
        let mut r = Reader::new(&v);
        assert_eq!(r.int(), Ok(5));
        assert_eq!(r.int(), Ok(-5));
        assert_eq!(r.int(), Ok(127));
        assert_eq!(r.int(), Ok(200));
        assert_eq!(r.int(), Ok(-100));
        assert_eq!(r.int(), Ok(70_000));
        assert!(r.is_empty());
    }

    #[test]
    fn lengths_are_not_trusted() {
        // array32 claiming four billion elements with nothing behind it
        let mut r = Reader::new(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(r.array_len(), Err(ReadError::Malformed));
        let mut r = Reader::new(&[0xdf, 0xff, 0xff, 0xff, 0xff, 1, 2]);
        assert_eq!(r.map_len(), Err(ReadError::Malformed));
        let mut r = Reader::new(&[0xdb, 0xff, 0xff, 0xff, 0xff, b'a']);
        assert_eq!(r.str(usize::MAX), Err(ReadError::Malformed));
        let mut r = Reader::new(&[0xcb, 0, 0]);
        assert_eq!(r.number(), Err(ReadError::Malformed));
    }

    #[test]
    fn strings_and_floats() {
        let mut v = Vec::new();
        put_str(&mut v, "dir");
        put_f32(&mut v, 0.5);
        put_bool(&mut v, true);
        put_nil(&mut v);
        let mut r = Reader::new(&v);
        assert_eq!(r.str(8), Ok("dir"));
        assert_eq!(r.number(), Ok(0.5));
        assert_eq!(r.bool(), Ok(true));
        assert_eq!(r.bool(), Err(ReadError::WrongType));
    }
}
