//! Reading user corpora from disk into [`Document`]s.
//!
//! Rules (kept deliberately simple and predictable):
//! - a `.jsonl` file holds one JSON object per line with a string field `"text"` (and optionally a
//!   string field `"domain"`); blank lines are skipped;
//! - any other file is read as text and becomes **one** document (the dataset splitter cuts
//!   long documents into pieces, so a single large file still yields a train/validation split);
//! - a directory is walked recursively in sorted path order (for determinism), taking `*.txt`,
//!   `*.md` and `*.jsonl` files and ignoring every other file, hidden entries (names starting
//!   with `.`) and symbolic links to directories;
//! - documents whose text is empty are dropped; if nothing remains the result is
//!   [`Error::EmptyCorpus`].
//!
//! How a file's bytes become text is its [`TextEncoding`] (`data.encoding`): strict UTF-8,
//! lossy UTF-8 (each invalid sequence becomes U+FFFD, with a warning that counts the bytes and
//! names the file), Latin-1, Windows-1252, or — for the byte tokenizer, which needs no text at
//! all — the bytes as they are. A leading UTF-8 byte-order mark is removed.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One unit of text, with the domain it belongs to when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// The text itself (for a file read as [`TextEncoding::Bytes`] that is not valid UTF-8: its
    /// lossy decoding, for display; the tokens come from `raw`).
    pub text: String,
    /// A label such as `"arithmetic"` (synthetic corpus, or a JSONL `"domain"` field).
    pub domain: Option<String>,
    /// The file's bytes as they are, kept only when it was read as [`TextEncoding::Bytes`] and is
    /// not valid UTF-8; the byte tokenizer encodes these instead of `text`.
    pub raw: Option<Vec<u8>>,
}

impl Document {
    /// A document of `text`.
    pub fn new(text: impl Into<String>, domain: Option<String>) -> Self {
        Document { text: text.into(), domain, raw: None }
    }

    /// The bytes the byte tokenizer encodes: `raw` when kept, else the UTF-8 of `text`.
    pub fn bytes(&self) -> &[u8] {
        self.raw.as_deref().unwrap_or(self.text.as_bytes())
    }
}

/// How the bytes of a corpus file become text: `data.encoding` in an experiment, `--data-encoding`
/// on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TextEncoding {
    /// Chosen by the tokenizer ([`TextEncoding::resolve`]): the byte tokenizer takes the bytes as
    /// they are ([`TextEncoding::Bytes`]), a BPE tokenizer reads lossy UTF-8.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// UTF-8; a file that is not valid UTF-8 is an error naming it and the offset of the first bad byte.
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    /// UTF-8, every invalid sequence replaced by U+FFFD; a warning counts the replaced bytes.
    #[serde(rename = "utf-8-lossy", alias = "utf8-lossy")]
    Utf8Lossy,
    /// ISO-8859-1: every byte is the character of the same number.
    #[serde(rename = "latin-1", alias = "latin1", alias = "iso-8859-1")]
    Latin1,
    /// Windows-1252 (cp1252): Latin-1 with printable characters in 0x80–0x9F (0x92 is ’).
    #[serde(rename = "cp1252", alias = "windows-1252")]
    Cp1252,
    /// The bytes as they are, for the byte tokenizer (a file that is not valid UTF-8 keeps its
    /// bytes in [`Document::raw`]; a `.jsonl` file must be JSON, so it is read as lossy UTF-8).
    #[serde(rename = "bytes")]
    Bytes,
}

impl TextEncoding {
    /// The names accepted in configs and on the command line.
    pub const NAMES: &'static str = "auto, utf-8, utf-8-lossy, latin-1, cp1252, bytes";

    /// What `self` means for a corpus read for the byte tokenizer (`byte_tokenizer`) or a BPE one:
    /// `Auto` becomes `Bytes` or `Utf8Lossy`; everything else stays.
    pub fn resolve(self, byte_tokenizer: bool) -> TextEncoding {
        match self {
            TextEncoding::Auto if byte_tokenizer => TextEncoding::Bytes,
            TextEncoding::Auto => TextEncoding::Utf8Lossy,
            e => e,
        }
    }

    /// The config name (`"utf-8-lossy"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TextEncoding::Auto => "auto",
            TextEncoding::Utf8 => "utf-8",
            TextEncoding::Utf8Lossy => "utf-8-lossy",
            TextEncoding::Latin1 => "latin-1",
            TextEncoding::Cp1252 => "cp1252",
            TextEncoding::Bytes => "bytes",
        }
    }
}

impl std::fmt::Display for TextEncoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for TextEncoding {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        serde_json::from_value(serde_json::Value::String(lower))
            .map_err(|_| format!("unknown text encoding `{s}` (expected one of {})", TextEncoding::NAMES))
    }
}

/// A file some of whose bytes were replaced by U+FFFD while reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replaced {
    /// The file.
    pub path: PathBuf,
    /// Bytes replaced (each maximal invalid sequence becomes one U+FFFD).
    pub bytes: usize,
    /// Byte offset of the first one.
    pub first_offset: usize,
}

impl std::fmt::Display for Replaced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} byte{} not valid UTF-8 (the first at offset {}) replaced by U+FFFD; set data.encoding (--data-encoding) to \"utf-8\" to refuse such files, or to \"cp1252\" or \"latin-1\" to decode them",
            self.path.display(),
            self.bytes,
            if self.bytes == 1 { "" } else { "s" },
            self.first_offset
        )
    }
}

/// The documents of a corpus and the files read with replacements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corpus {
    /// Documents with non-empty text.
    pub docs: Vec<Document>,
    /// One entry per file in which bytes were replaced by U+FFFD.
    pub replaced: Vec<Replaced>,
}

/// File extensions taken when walking a directory.
const DIR_EXTENSIONS: [&str; 3] = ["txt", "md", "jsonl"];

/// Load every document under `path` (a file or a directory) with `encoding` (see the module docs
/// for the rules); a warning (`tracing`) names each file whose invalid bytes were replaced.
/// [`TextEncoding::Auto`] reads as lossy UTF-8 here: resolve it for the tokenizer first
/// ([`TextEncoding::resolve`]).
pub fn load_documents(path: &Path, encoding: TextEncoding) -> Result<Vec<Document>> {
    let corpus = read_corpus(path, encoding)?;
    for r in &corpus.replaced {
        tracing::warn!("{r}");
    }
    Ok(corpus.docs)
}

/// [`load_documents`] without the warnings: the documents and the files with replaced bytes.
pub fn read_corpus(path: &Path, encoding: TextEncoding) -> Result<Corpus> {
    let meta = fs::metadata(path).map_err(|source| Error::Io { path: path.to_path_buf(), action: "cannot open", source })?;
    let files = if meta.is_dir() {
        let mut files = Vec::new();
        collect_files(path, &mut files)?;
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut docs = Vec::new();
    let mut replaced = Vec::new();
    for file in &files {
        replaced.extend(read_file(file, encoding, &mut docs)?);
    }
    docs.retain(|d| !d.text.is_empty());
    if docs.is_empty() {
        return Err(Error::EmptyCorpus { path: path.to_path_buf() });
    }
    Ok(Corpus { docs, replaced })
}

/// Recursively gather corpus files under `dir`, in sorted order.
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let io_err = |source| Error::Io { path: dir.to_path_buf(), action: "cannot list directory", source };
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let file_type = entry.file_type().map_err(|source| Error::Io { path: path.clone(), action: "cannot stat", source })?;
        entries.push((path, file_type));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, file_type) in entries {
        if file_type.is_dir() {
            collect_files(&path, out)?;
        } else if has_corpus_extension(&path) {
            // Regular files and symbolic links to files; a link to a directory fails `is_file`.
            if file_type.is_file() || fs::metadata(&path).map(|m| m.is_file()).unwrap_or(false) {
                out.push(path);
            }
        }
    }
    Ok(())
}

fn has_corpus_extension(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| DIR_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn is_jsonl(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("jsonl"))
}

/// A file's contents as text (and, for [`TextEncoding::Bytes`] and bytes that are not UTF-8, the
/// bytes themselves), with the replacements made.
pub(crate) struct Decoded {
    pub(crate) text: String,
    pub(crate) raw: Option<Vec<u8>>,
    pub(crate) replaced: Option<Replaced>,
}

/// Windows-1252 characters of the bytes 0x80–0x9F (the five undefined ones keep their C1 code,
/// as the WHATWG encoding standard maps them).
const CP1252_HIGH: [char; 32] = [
    '\u{20AC}', '\u{81}', '\u{201A}', '\u{192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}', '\u{2C6}', '\u{2030}', '\u{160}',
    '\u{2039}', '\u{152}', '\u{8D}', '\u{17D}', '\u{8F}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}',
    '\u{2014}', '\u{2DC}', '\u{2122}', '\u{161}', '\u{203A}', '\u{153}', '\u{9D}', '\u{17E}', '\u{178}',
];

/// Decode the bytes of the file `path` with `encoding`; only [`TextEncoding::Utf8`] can fail.
pub(crate) fn decode(bytes: Vec<u8>, encoding: TextEncoding, path: &Path) -> Result<Decoded> {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    let bom = if bytes.starts_with(BOM) { BOM.len() } else { 0 };
    let whole = |text: String| Decoded { text, raw: None, replaced: None };
    match encoding {
        TextEncoding::Latin1 => return Ok(whole(bytes[bom..].iter().map(|&b| char::from(b)).collect())),
        TextEncoding::Cp1252 => {
            return Ok(whole(
                bytes[bom..]
                    .iter()
                    .map(|&b| if (0x80..0xA0).contains(&b) { CP1252_HIGH[b as usize - 0x80] } else { char::from(b) })
                    .collect(),
            ))
        }
        _ => {}
    }
    let mut bytes = bytes;
    bytes.drain(..bom);
    let bytes = match String::from_utf8(bytes) {
        Ok(text) => return Ok(whole(text)),
        Err(e) => e.into_bytes(),
    };
    // offsets name the file's bytes, BOM included
    let (mut n_bad, mut first, mut at) = (0usize, None, bom);
    for chunk in bytes.utf8_chunks() {
        at += chunk.valid().len();
        if !chunk.invalid().is_empty() {
            first.get_or_insert(at);
            n_bad += chunk.invalid().len();
        }
        at += chunk.invalid().len();
    }
    let first_offset = first.unwrap_or(bom);
    if encoding == TextEncoding::Utf8 {
        return Err(Error::InvalidUtf8 { path: path.to_path_buf(), offset: first_offset });
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let replaced = Some(Replaced { path: path.to_path_buf(), bytes: n_bad, first_offset });
    if encoding == TextEncoding::Bytes {
        // the byte tokenizer takes the bytes as they are: nothing is replaced in its tokens
        return Ok(Decoded { text, raw: Some(bytes), replaced });
    }
    Ok(Decoded { text, raw: None, replaced })
}

/// Read one file as text with `encoding`, naming the file on failure.
pub(crate) fn read_text(path: &Path, encoding: TextEncoding) -> Result<Decoded> {
    let bytes = fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), action: "cannot read", source })?;
    decode(bytes, encoding, path)
}

/// Append the documents of one file to `out`; returns its replacements, if any.
fn read_file(path: &Path, encoding: TextEncoding, out: &mut Vec<Document>) -> Result<Option<Replaced>> {
    let d = read_text(path, encoding)?;
    if is_jsonl(path) {
        // JSON is UTF-8 text: raw bytes cannot be kept, the lossy text is parsed and the
        // replacement reported
        parse_jsonl(path, &d.text, out)?;
        Ok(d.replaced)
    } else {
        let kept = d.raw.is_some();
        out.push(Document { text: d.text, domain: None, raw: d.raw });
        // bytes kept as they are were not replaced
        Ok(if kept { None } else { d.replaced })
    }
}

fn parse_jsonl(path: &Path, text: &str, out: &mut Vec<Document>) -> Result<()> {
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |message: String| Error::Jsonl { path: path.to_path_buf(), line: i + 1, message };
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| err(format!("invalid JSON: {e}")))?;
        let obj = value.as_object().ok_or_else(|| err("expected a JSON object with a \"text\" field".to_string()))?;
        let text = match obj.get("text") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => return Err(err(format!("field \"text\" must be a string, found {}", json_kind(other)))),
            None => return Err(err("missing field \"text\"".to_string())),
        };
        let domain = match obj.get("domain") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(err(format!("field \"domain\" must be a string, found {}", json_kind(other)))),
        };
        out.push(Document { text, domain, raw: None });
    }
    Ok(())
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, content).unwrap();
        p
    }

    #[test]
    fn load_documents_text_file_is_one_document() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "a.txt", b"hello\n\nworld\n");
        let docs = load_documents(&p, TextEncoding::Utf8).unwrap();
        assert_eq!(docs, vec![Document::new("hello\n\nworld\n", None)]);
    }

    #[test]
    fn load_documents_jsonl_reads_text_and_domain_skipping_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "d.jsonl", b"{\"text\":\"one\",\"domain\":\"x\"}\n\n{\"text\":\"two\",\"id\":3}\r\n");
        let docs = load_documents(&p, TextEncoding::Utf8).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0], Document::new("one", Some("x".into())));
        assert_eq!(docs[1], Document::new("two", None));
    }

    #[test]
    fn load_documents_jsonl_missing_text_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "d.jsonl", b"{\"text\":\"ok\"}\n{\"body\":\"no\"}\n");
        let err = load_documents(&p, TextEncoding::Utf8).unwrap_err();
        match &err {
            Error::Jsonl { path, line, message } => {
                assert_eq!(path, &p);
                assert_eq!(*line, 2);
                assert!(message.contains("\"text\""), "{message}");
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains("d.jsonl:2"), "{err}");
    }

    #[test]
    fn load_documents_jsonl_non_string_text_is_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "d.jsonl", b"{\"text\":5}\n");
        let err = load_documents(&p, TextEncoding::Utf8).unwrap_err();
        assert!(err.to_string().contains("must be a string, found a number"), "{err}");
    }

    #[test]
    fn load_documents_jsonl_invalid_json_is_error_with_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "d.jsonl", b"{\"text\":\"a\"}\n{not json\n");
        match load_documents(&p, TextEncoding::Utf8).unwrap_err() {
            Error::Jsonl { line, .. } => assert_eq!(line, 2),
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn load_documents_invalid_utf8_names_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "bad.txt", b"ab\xff\xfecd");
        match load_documents(&p, TextEncoding::Utf8).unwrap_err() {
            Error::InvalidUtf8 { path, offset } => {
                assert_eq!(path, p);
                assert_eq!(offset, 2);
            }
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn load_documents_missing_path_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope.txt");
        let err = load_documents(&p, TextEncoding::Utf8).unwrap_err();
        assert!(matches!(&err, Error::Io { path, .. } if path == &p), "{err:?}");
        assert!(err.to_string().contains("nope.txt"));
    }

    #[test]
    fn load_documents_directory_walks_sorted_and_filters_extensions() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "b.txt", b"B");
        write(dir.path(), "a.md", b"A");
        write(dir.path(), "sub/c.jsonl", b"{\"text\":\"C\"}\n");
        write(dir.path(), "sub/ignored.bin", b"\xff\xff");
        write(dir.path(), ".hidden.txt", b"H");
        write(dir.path(), "empty.txt", b"");
        let docs = load_documents(dir.path(), TextEncoding::Utf8).unwrap();
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(texts, vec!["A", "B", "C"]);
    }

    #[test]
    fn load_documents_empty_directory_is_empty_corpus() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "x.bin", b"data");
        write(dir.path(), "e.txt", b"");
        let err = load_documents(dir.path(), TextEncoding::Utf8).unwrap_err();
        assert!(matches!(&err, Error::EmptyCorpus { path } if path == dir.path()), "{err:?}");
    }

    #[test]
    fn read_text_bom_is_stripped() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "bom.txt", "\u{feff}hi".as_bytes());
        for enc in [TextEncoding::Utf8, TextEncoding::Bytes, TextEncoding::Latin1, TextEncoding::Cp1252] {
            assert_eq!(read_text(&p, enc).unwrap().text, "hi", "{enc}");
        }
    }

    /// 8 KB of text with one Windows-1252 apostrophe (0x92), as Webster 1913 has.
    fn stray_0x92() -> Vec<u8> {
        let mut b = "It is the dictionary's word.\n".repeat(300).into_bytes();
        b.extend_from_slice(b"Noah Webster\x92s dictionary.\n");
        b.extend("and more text.\n".repeat(10).bytes());
        b
    }

    const STRAY_AT: usize = 29 * 300 + 12;

    #[test]
    fn strict_utf8_names_file_and_offset_of_a_stray_byte() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "webster.txt", &stray_0x92());
        let err = load_documents(&p, TextEncoding::Utf8).unwrap_err();
        assert!(matches!(&err, Error::InvalidUtf8 { path, offset } if path == &p && *offset == STRAY_AT), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("webster.txt") && msg.contains(&format!("offset {STRAY_AT}")) && msg.contains("data.encoding"), "{msg}");
    }

    #[test]
    fn lossy_utf8_replaces_and_counts_the_stray_bytes_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "webster.txt", &stray_0x92());
        let c = read_corpus(&p, TextEncoding::Utf8Lossy).unwrap();
        assert_eq!(c.replaced, vec![Replaced { path: p.clone(), bytes: 1, first_offset: STRAY_AT }]);
        assert_eq!(c.docs.len(), 1);
        assert!(c.docs[0].text.contains("Webster\u{FFFD}s dictionary"));
        assert_eq!(c.docs[0].raw, None);
        let msg = c.replaced[0].to_string();
        assert!(
            msg.contains("webster.txt") && msg.contains("1 byte not valid UTF-8") && msg.contains(&format!("offset {STRAY_AT}")),
            "{msg}"
        );
        // a 3-byte invalid run and a truncated sequence at the end: 5 bytes, counted
        let q = write(dir.path(), "two.txt", b"ab\xff\xfe\xfdcd\xe2\x82");
        let c = read_corpus(&q, TextEncoding::Utf8Lossy).unwrap();
        assert_eq!((c.replaced[0].bytes, c.replaced[0].first_offset), (5, 2));
        // a valid file has nothing replaced
        let v = write(dir.path(), "ok.txt", "caf\u{e9}".as_bytes());
        assert!(read_corpus(&v, TextEncoding::Utf8Lossy).unwrap().replaced.is_empty());
    }

    #[test]
    fn bytes_encoding_keeps_the_stray_byte_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = stray_0x92();
        let p = write(dir.path(), "webster.txt", &bytes);
        let c = read_corpus(&p, TextEncoding::Bytes).unwrap();
        assert!(c.replaced.is_empty(), "nothing replaced in what the byte tokenizer sees");
        assert_eq!(c.docs[0].raw.as_deref(), Some(&bytes[..]));
        assert_eq!(c.docs[0].bytes()[STRAY_AT], 0x92);
        // valid UTF-8 keeps no second copy
        let v = write(dir.path(), "ok.txt", b"plain");
        assert_eq!(read_corpus(&v, TextEncoding::Bytes).unwrap().docs, vec![Document::new("plain", None)]);
        // JSON must be UTF-8: a .jsonl file is read lossily and reported
        let j = write(dir.path(), "d.jsonl", b"{\"text\":\"a\x92b\"}\n");
        let c = read_corpus(&j, TextEncoding::Bytes).unwrap();
        assert_eq!(c.docs[0].text, "a\u{FFFD}b");
        assert_eq!(c.replaced.len(), 1);
    }

    #[test]
    fn single_byte_encodings_decode_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "w.txt", b"Webster\x92s \x80 caf\xe9 \x81");
        let c = read_corpus(&p, TextEncoding::Cp1252).unwrap();
        assert_eq!(c.docs[0].text, "Webster\u{2019}s \u{20AC} caf\u{e9} \u{81}");
        assert!(c.replaced.is_empty());
        let c = read_corpus(&p, TextEncoding::Latin1).unwrap();
        assert_eq!(c.docs[0].text, "Webster\u{92}s \u{80} caf\u{e9} \u{81}");
    }

    #[test]
    fn text_encoding_names_parse_resolve_and_roundtrip() {
        for e in [
            TextEncoding::Auto,
            TextEncoding::Utf8,
            TextEncoding::Utf8Lossy,
            TextEncoding::Latin1,
            TextEncoding::Cp1252,
            TextEncoding::Bytes,
        ] {
            assert_eq!(e.name().parse::<TextEncoding>().unwrap(), e);
            assert_eq!(serde_json::to_value(e).unwrap(), serde_json::Value::String(e.name().into()));
        }
        assert_eq!("Windows-1252".parse::<TextEncoding>().unwrap(), TextEncoding::Cp1252);
        let e = "ebcdic".parse::<TextEncoding>().unwrap_err();
        assert!(e.contains("ebcdic") && e.contains("utf-8-lossy"), "{e}");
        assert_eq!(TextEncoding::Auto.resolve(true), TextEncoding::Bytes);
        assert_eq!(TextEncoding::Auto.resolve(false), TextEncoding::Utf8Lossy);
        assert_eq!(TextEncoding::Utf8.resolve(true), TextEncoding::Utf8);
    }
}
