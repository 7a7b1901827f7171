//! The GGUF container (llama.cpp's model file, versions 2 and 3, little-endian): a header, typed
//! metadata key/values, tensor descriptors, then the aligned tensor data.
//!
//! Everything is bounds-checked against the file's length before it is read: a truncated or
//! corrupt file is an [`Error::Checkpoint`] naming the file and the key or tensor, never a panic or
//! an allocation sized by an unchecked count.

use super::quants::GgmlType;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `GGUF` read as a little-endian u32.
const MAGIC: u32 = 0x4655_4747;
/// Data alignment when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;
/// Longest string accepted (a key, a tensor name or a metadata string such as a chat template).
const MAX_STRING: u64 = 64 << 20;
/// Most dimensions of a tensor (GGML_MAX_DIMS).
const MAX_DIMS: u32 = 4;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// any unsigned integer type
    U64(u64),
    /// any signed integer type
    I64(i64),
    /// f32 or f64
    F64(f64),
    /// bool
    Bool(bool),
    /// UTF-8 string (invalid UTF-8 is replaced)
    Str(String),
    /// array of values (of one type)
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// The value as f64, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::U64(v) => Some(v as f64),
            Value::I64(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => None,
        }
    }
    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    /// The value as an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor's descriptor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// its name (`blk.0.attn_q.weight`)
    pub name: String,
    /// GGML's `ne`: the innermost (contiguous) dimension first
    pub ne: Vec<u64>,
    /// element type
    pub ty: GgmlType,
    /// byte offset of its data in the file
    pub start: usize,
    /// bytes of data
    pub len: usize,
}

impl TensorInfo {
    /// Row-major shape (outermost first, as PyTorch and safetensors write it).
    pub fn shape(&self) -> Vec<usize> {
        self.ne.iter().rev().map(|&n| n as usize).collect()
    }
    /// Elements.
    pub fn n_elements(&self) -> usize {
        self.ne.iter().product::<u64>() as usize
    }
}

/// A parsed GGUF file: metadata and tensor descriptors, with the bytes it was parsed from.
pub struct GgufFile<B: AsRef<[u8]>> {
    /// the file (for error messages)
    pub path: PathBuf,
    /// format version (2 or 3)
    pub version: u32,
    /// metadata by key
    pub meta: BTreeMap<String, Value>,
    /// tensors in file order
    pub tensors: Vec<TensorInfo>,
    bytes: B,
}

impl<B: AsRef<[u8]>> std::fmt::Debug for GgufFile<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GgufFile({}, v{}, {} keys, {} tensors)", self.path.display(), self.version, self.meta.len(), self.tensors.len())
    }
}

/// A cursor over the file's bytes whose reads fail (naming `what`) past the end.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::Checkpoint { path: self.path.to_path_buf(), message: format!("not a valid GGUF file: {msg}") }
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len()).ok_or_else(|| {
            self.err(format!("{what} at byte {} needs {n} bytes but the file ends at {} (truncated?)", self.at, self.b.len()))
        })?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        if n > MAX_STRING {
            return Err(self.err(format!("{what}: string length {n} is implausible")));
        }
        Ok(String::from_utf8_lossy(self.take(n as usize, what)?).into_owned())
    }
    /// A count of items of at least `min_bytes` each: refused when the rest of the file cannot hold them.
    fn count(&mut self, min_bytes: u64, what: &str) -> Result<usize> {
        let n = self.u64(what)?;
        let left = (self.b.len() - self.at) as u64;
        if n.saturating_mul(min_bytes) > left {
            return Err(self.err(format!("{what}: count {n} does not fit in the {left} bytes left")));
        }
        Ok(n as usize)
    }
    fn value(&mut self, ty: u32, what: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U64(self.u8(what)? as u64),
            1 => Value::I64(self.u8(what)? as i8 as i64),
            2 => Value::U64(self.u16(what)? as u64),
            3 => Value::I64(self.u16(what)? as i16 as i64),
            4 => Value::U64(self.u32(what)? as u64),
            5 => Value::I64(self.u32(what)? as i32 as i64),
            6 => Value::F64(f32::from_bits(self.u32(what)?) as f64),
            7 => match self.u8(what)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(format!("{what}: bool byte {b}"))),
            },
            8 => Value::Str(self.string(what)?),
            9 => {
                if depth > 0 {
                    return Err(self.err(format!("{what}: nested arrays are not supported")));
                }
                let ety = self.u32(what)?;
                let n = self.count(1, what)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(ety, what, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(self.u64(what)? as i64),
            12 => Value::F64(f64::from_bits(self.u64(what)?)),
            t => return Err(self.err(format!("{what}: unknown value type {t}"))),
        })
    }
}

impl GgufFile<memmap2::Mmap> {
    /// Memory-map and parse `path` (the tensor data stays in the page cache until read).
    pub fn open(path: &Path) -> Result<Self> {
        let f = std::fs::File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        // SAFETY: read-only map; like every mmap-based loader this assumes nobody truncates or
        // rewrites the file while the model is being loaded
        let m = unsafe { memmap2::Mmap::map(&f) }.map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::parse(path, m)
    }
}

impl<B: AsRef<[u8]>> GgufFile<B> {
    /// Parse `bytes` (the contents of `path`).
    pub fn parse(path: &Path, bytes: B) -> Result<Self> {
        let b = bytes.as_ref();
        let mut r = Reader { b, at: 0, path };
        let magic = r.u32("the magic number")?;
        if magic != MAGIC {
            return Err(r.err(format!("it starts with {:02x?}, not `GGUF`", &b[..4])));
        }
        let version = r.u32("the version")?;
        if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            return Err(r.err("it is a big-endian GGUF; only little-endian files are supported"));
        }
        if !(2..=3).contains(&version) {
            return Err(r.err(format!("version {version} (only 2 and 3 are supported; convert it again with a current llama.cpp)")));
        }
        // a tensor descriptor takes ≥ 8 + 4 + 8 + 4 + 8 bytes, a key/value ≥ 8 + 4 + 1
        let n_tensors = r.u64("the tensor count")?;
        let n_kv = r.u64("the metadata count")?;
        let left = (b.len() - r.at) as u64;
        if n_tensors.saturating_mul(32) > left || n_kv.saturating_mul(13) > left {
            return Err(r.err(format!("{n_tensors} tensors and {n_kv} metadata entries cannot fit in {} bytes", b.len())));
        }
        let mut meta = BTreeMap::new();
        for i in 0..n_kv {
            let key = r.string(&format!("metadata key {i}"))?;
            let ty = r.u32(&format!("the type of `{key}`"))?;
            let v = r.value(ty, &format!("metadata `{key}`"), 0)?;
            if meta.insert(key.clone(), v).is_some() {
                return Err(r.err(format!("metadata key `{key}` appears twice")));
            }
        }
        let alignment = match meta.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => return Err(r.err(format!("`general.alignment` is {v:?}, not a power of two"))),
            },
        };
        let mut raw = Vec::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = r.string(&format!("the name of tensor {i}"))?;
            let what = format!("tensor `{name}`");
            let n_dims = r.u32(&what)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(r.err(format!("{what} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")));
            }
            let ne = (0..n_dims).map(|_| r.u64(&what)).collect::<Result<Vec<u64>>>()?;
            let ty_id = r.u32(&what)?;
            let offset = r.u64(&what)?;
            raw.push((name, ne, ty_id, offset));
        }
        let data_start = (r.at as u64).div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(raw.len());
        let mut seen = std::collections::HashSet::new();
        for (name, ne, ty_id, offset) in raw {
            let bad = |msg: String| Error::Checkpoint { path: path.to_path_buf(), message: format!("tensor `{name}`: {msg}") };
            if !seen.insert(name.clone()) {
                return Err(bad("appears twice".into()));
            }
            let ty = GgmlType::from_id(ty_id).ok_or_else(|| bad(format!("unknown GGML type id {ty_id}")))?;
            let n: u64 = ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).ok_or_else(|| bad(format!("shape {ne:?} overflows")))?;
            if ne.contains(&0) {
                return Err(bad(format!("shape {ne:?} has a zero dimension")));
            }
            let (bs, bb) = ty.block();
            if ne[0] % bs as u64 != 0 {
                return Err(bad(format!("rows of {} values are not a whole number of {} blocks ({bs} values each)", ne[0], ty.name())));
            }
            let len = (n / bs as u64).checked_mul(bb as u64).ok_or_else(|| bad("size overflows".into()))?;
            if offset % alignment != 0 {
                return Err(bad(format!("data offset {offset} is not a multiple of the alignment {alignment}")));
            }
            let start = data_start.checked_add(offset).ok_or_else(|| bad("offset overflows".into()))?;
            let end = start.checked_add(len).ok_or_else(|| bad("offset overflows".into()))?;
            if end > b.len() as u64 {
                return Err(bad(format!("its data (bytes {start}..{end}) runs past the end of the file ({} bytes; truncated?)", b.len())));
            }
            tensors.push(TensorInfo { name, ne, ty, start: start as usize, len: len as usize });
        }
        Ok(GgufFile { path: path.to_path_buf(), version, meta, tensors, bytes })
    }

    /// The stored bytes of `t`.
    pub fn data(&self, t: &TensorInfo) -> &[u8] {
        &self.bytes.as_ref()[t.start..t.start + t.len]
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Bits per weight over the matrices a token streams: every tensor of two or more dimensions
    /// but the token embedding and the routers (`ffn_gate_inp`) — the matrices
    /// `EngineWeights::matrix_bits_per_weight` counts in the engine.
    pub fn matrix_bits_per_weight(&self) -> f64 {
        let mats = self.tensors.iter().filter(|t| t.ne.len() >= 2 && t.name != "token_embd.weight" && !t.name.contains("ffn_gate_inp"));
        let (bytes, n) = mats.fold((0usize, 0usize), |(b, n), t| (b + t.len, n + t.n_elements()));
        8.0 * bytes as f64 / n.max(1) as f64
    }

    /// Metadata `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.meta.get(key)
    }

    /// An error naming the file.
    pub fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::Checkpoint { path: self.path.clone(), message: msg.to_string() }
    }

    /// Metadata `key` as a string (error naming the key when missing or of another type).
    pub fn str(&self, key: &str) -> Result<&str> {
        match self.get(key) {
            Some(v) => v.as_str().ok_or_else(|| self.err(format!("metadata `{key}` is {v:?}, not a string"))),
            None => Err(self.err(format!("metadata `{key}` is missing"))),
        }
    }

    /// Metadata `key` as an unsigned integer, `None` when absent (error when of another type).
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        self.get(key)
            .map(|v| v.as_u64().ok_or_else(|| self.err(format!("metadata `{key}` is {v:?}, not a non-negative integer"))))
            .transpose()
    }

    /// Metadata `key` as an unsigned integer (error naming the key when missing).
    pub fn u64(&self, key: &str) -> Result<u64> {
        self.opt_u64(key)?.ok_or_else(|| self.err(format!("metadata `{key}` is missing")))
    }

    /// Metadata `key` as a number, `None` when absent.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key).map(|v| v.as_f64().ok_or_else(|| self.err(format!("metadata `{key}` is {v:?}, not a number")))).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF v3 with the given metadata and one f32 tensor `[2, 3]`.
    pub(crate) fn tiny() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(MAGIC.to_le_bytes());
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes()); // tensors
        b.extend(2u64.to_le_bytes()); // kv
        let s = |b: &mut Vec<u8>, s: &str| {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        };
        s(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        s(&mut b, "llama");
        s(&mut b, "llama.block_count");
        b.extend(4u32.to_le_bytes());
        b.extend(7u32.to_le_bytes());
        s(&mut b, "w");
        b.extend(2u32.to_le_bytes());
        b.extend(3u64.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend(0u32.to_le_bytes()); // f32
        b.extend(0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        for i in 0..6 {
            b.extend((i as f32).to_le_bytes());
        }
        b
    }

    #[test]
    fn parses_a_small_file() {
        let f = GgufFile::parse(Path::new("t.gguf"), tiny()).unwrap();
        assert_eq!(f.str("general.architecture").unwrap(), "llama");
        assert_eq!(f.u64("llama.block_count").unwrap(), 7);
        let t = f.tensor("w").unwrap();
        assert_eq!(t.shape(), vec![2, 3]);
        assert_eq!(f.data(t).len(), 24);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let b = tiny();
        for n in 0..b.len() {
            let e = GgufFile::parse(Path::new("t.gguf"), b[..n].to_vec()).unwrap_err().to_string();
            assert!(e.contains("t.gguf"), "{n}: {e}");
        }
    }

    #[test]
    fn corrupt_counts_and_types_are_errors() {
        let mut b = tiny();
        b[4] = 1; // version 1
        assert!(GgufFile::parse(Path::new("t.gguf"), b).unwrap_err().to_string().contains("version 1"));
        let mut b = tiny();
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // tensor count
        assert!(GgufFile::parse(Path::new("t.gguf"), b).unwrap_err().to_string().contains("cannot fit"));
        let mut b = tiny();
        b[0] = b'X';
        assert!(GgufFile::parse(Path::new("t.gguf"), b).unwrap_err().to_string().contains("not `GGUF`"));
        // every single-byte corruption parses or fails cleanly
        let base = tiny();
        for i in 0..base.len() {
            for v in [0u8, 0xff, 0x7f] {
                let mut b = base.clone();
                b[i] = v;
                let _ = GgufFile::parse(Path::new("t.gguf"), b);
            }
        }
    }
}
