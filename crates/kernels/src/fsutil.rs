//! The workspace's one atomic file write, here because this is the crate every other moe crate
//! depends on (its only I/O; each caller maps the error to its own type naming the file).

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Write `bytes` to `path` atomically: a temporary file `.{name}.tmp` in the same directory
/// (created when missing), written and synced, then renamed onto `path`, so a reader or a crash
/// never sees a half-written file. On error the temporary file is removed and the previous
/// content of `path` stays intact. The error's message names the operation and the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let ctx = |action: &str, p: &Path| {
        let p = p.display().to_string();
        let action = action.to_string();
        move |e: io::Error| io::Error::new(e.kind(), format!("{action} {p}: {e}"))
    };
    let name = path
        .file_name()
        .and_then(|s| s.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{}: the path has no (UTF-8) file name", path.display())))?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(ctx("cannot create directory", dir))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut f = fs::File::create(&tmp).map_err(ctx("cannot create", &tmp))?;
        f.write_all(bytes).map_err(ctx("cannot write", &tmp))?;
        f.sync_all().map_err(ctx("cannot sync", &tmp))?;
        fs::rename(&tmp, path).map_err(ctx("cannot rename the temporary file onto", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replaces_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("moe-fsutil-{}", std::process::id()));
        let p = dir.join("sub/a.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(!dir.join("sub/.a.txt.tmp").exists());
        // a directory in the way: an error naming the file, the temporary file removed
        let blocked = dir.join("sub/d");
        fs::create_dir_all(blocked.join("x")).unwrap();
        let e = write_atomic(&blocked, b"x").unwrap_err().to_string();
        assert!(e.contains("sub/d"), "{e}");
        assert!(!dir.join("sub/.d.tmp").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
