//! Reading user corpora from disk into [`Document`]s.
//!
//! Rules (kept deliberately simple and predictable):
//! - a `.jsonl` file holds one JSON object per line with a string field `"text"` (and optionally a
//!   string field `"domain"`); blank lines are skipped;
//! - any other file is read as UTF-8 text and becomes **one** document (the dataset splitter cuts
//!   long documents into pieces, so a single large file still yields a train/validation split);
//! - a directory is walked recursively in sorted path order (for determinism), taking `*.txt`,
//!   `*.md` and `*.jsonl` files and ignoring every other file, hidden entries (names starting
//!   with `.`) and symbolic links to directories;
//! - documents whose text is empty are dropped; if nothing remains the result is
//!   [`Error::EmptyCorpus`].

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One unit of text, with the domain it belongs to when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// The text itself.
    pub text: String,
    /// A label such as `"arithmetic"` (synthetic corpus, or a JSONL `"domain"` field).
    pub domain: Option<String>,
}

/// File extensions taken when walking a directory.
const DIR_EXTENSIONS: [&str; 3] = ["txt", "md", "jsonl"];

/// Load every document under `path` (a file or a directory); see the module docs for the rules.
pub fn load_documents(path: &Path) -> Result<Vec<Document>> {
    let meta = fs::metadata(path).map_err(|source| Error::Io { path: path.to_path_buf(), action: "cannot open", source })?;
    let files = if meta.is_dir() {
        let mut files = Vec::new();
        collect_files(path, &mut files)?;
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut docs = Vec::new();
    for file in &files {
        read_file(file, &mut docs)?;
    }
    docs.retain(|d| !d.text.is_empty());
    if docs.is_empty() {
        return Err(Error::EmptyCorpus { path: path.to_path_buf() });
    }
    Ok(docs)
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

/// Read one file as UTF-8 text, naming the file on failure. A leading BOM is removed.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), action: "cannot read", source })?;
    let mut text =
        String::from_utf8(bytes).map_err(|e| Error::InvalidUtf8 { path: path.to_path_buf(), offset: e.utf8_error().valid_up_to() })?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

fn read_file(path: &Path, out: &mut Vec<Document>) -> Result<()> {
    let text = read_text(path)?;
    if is_jsonl(path) {
        parse_jsonl(path, &text, out)
    } else {
        out.push(Document { text, domain: None });
        Ok(())
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
        out.push(Document { text, domain });
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
        let docs = load_documents(&p).unwrap();
        assert_eq!(docs, vec![Document { text: "hello\n\nworld\n".into(), domain: None }]);
    }

    #[test]
    fn load_documents_jsonl_reads_text_and_domain_skipping_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "d.jsonl", b"{\"text\":\"one\",\"domain\":\"x\"}\n\n{\"text\":\"two\",\"id\":3}\r\n");
        let docs = load_documents(&p).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0], Document { text: "one".into(), domain: Some("x".into()) });
        assert_eq!(docs[1], Document { text: "two".into(), domain: None });
    }

    #[test]
    fn load_documents_jsonl_missing_text_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "d.jsonl", b"{\"text\":\"ok\"}\n{\"body\":\"no\"}\n");
        let err = load_documents(&p).unwrap_err();
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
        let err = load_documents(&p).unwrap_err();
        assert!(err.to_string().contains("must be a string, found a number"), "{err}");
    }

    #[test]
    fn load_documents_jsonl_invalid_json_is_error_with_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "d.jsonl", b"{\"text\":\"a\"}\n{not json\n");
        match load_documents(&p).unwrap_err() {
            Error::Jsonl { line, .. } => assert_eq!(line, 2),
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn load_documents_invalid_utf8_names_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "bad.txt", b"ab\xff\xfecd");
        match load_documents(&p).unwrap_err() {
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
        let err = load_documents(&p).unwrap_err();
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
        let docs = load_documents(dir.path()).unwrap();
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(texts, vec!["A", "B", "C"]);
    }

    #[test]
    fn load_documents_empty_directory_is_empty_corpus() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "x.bin", b"data");
        write(dir.path(), "e.txt", b"");
        let err = load_documents(dir.path()).unwrap_err();
        assert!(matches!(&err, Error::EmptyCorpus { path } if path == dir.path()), "{err:?}");
    }

    #[test]
    fn read_text_bom_is_stripped() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "bom.txt", "\u{feff}hi".as_bytes());
        assert_eq!(read_text(&p).unwrap(), "hi");
    }
}
