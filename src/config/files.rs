//! Reading the files a config names — the config itself, certificates, keys
//! and error pages — on the control plane (`--check`, start, reload).
//!
//! Only regular files are read, and only up to a size cap: a path naming
//! `/dev/zero` would otherwise be read without end, and a FIFO would hang
//! the open until a writer came. The open uses `O_NONBLOCK` so that a FIFO
//! is opened at once and then refused by its type.

use std::{fs::File, io::Read, os::unix::fs::OpenOptionsExt, path::Path};

/// Largest config file, in bytes: a config with thousands of routes is a
/// few hundred KiB.
pub const MAX_CONFIG: u64 = 16 << 20;

/// Largest certificate chain or key file, in bytes: a PEM chain with a
/// large CA bundle is a few hundred KiB.
pub const MAX_PEM: u64 = 1 << 20;

/// Largest error page, in bytes: error pages are small HTML files; a bigger
/// file is a mistake and would cost memory per answer.
pub const MAX_ERROR_PAGE: u64 = 1 << 20;

/// Opens `path` for reading if it is a regular file of at most `cap` bytes;
/// the error names the path and what is wrong with it.
pub fn open_regular(path: &Path, cap: u64) -> Result<File, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.is_dir() {
        return Err(format!("{} is a folder, not a file", path.display()));
    }
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.len() > cap {
        return Err(too_large(path, cap));
    }
    Ok(file)
}

/// The whole of `path`, a regular file of at most `cap` bytes. A file that
/// grows past `cap` while it is read is refused too.
pub fn read_regular(path: &Path, cap: u64) -> Result<Vec<u8>, String> {
    let file = open_regular(path, cap)?;
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > cap {
        return Err(too_large(path, cap));
    }
    Ok(bytes)
}

fn too_large(path: &Path, cap: u64) -> String {
    format!("{} is larger than {cap} bytes", path.display())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{open_regular, read_regular};

    #[test]
    fn device_files_fifos_and_folders_are_refused_by_type() {
        for (path, what) in [
            ("/dev/zero", "is not a regular file"),
            ("/dev/null", "is not a regular file"),
            ("/", "is a folder, not a file"),
        ] {
            let e = read_regular(Path::new(path), 10).unwrap_err();
            assert_eq!(e, format!("{path} {what}"));
        }
        let dir = std::env::temp_dir().join(format!("ringside-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status();
        if status.is_ok_and(|s| s.success()) {
            // Returns at once: the open does not wait for a writer.
            let e = open_regular(&fifo, 10).unwrap_err();
            assert!(e.ends_with("is not a regular file"), "{e}");
        }
        // Best effort: a leftover temp folder harms nobody.
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_cap_is_inclusive() {
        let path = std::env::temp_dir().join(format!("ringside-cap-{}", std::process::id()));
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read_regular(&path, 10).unwrap(), b"0123456789");
        let e = read_regular(&path, 9).unwrap_err();
        assert_eq!(e, format!("{} is larger than 9 bytes", path.display()));
        // Best effort, as above.
        let _ = std::fs::remove_file(&path);
    }
}
