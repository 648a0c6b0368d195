//! The cluster token: generated at first start, kept in `DATA_DIR/token`
//! with mode 0600, required on every RPC.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Load the token, or create it. Returns `(token, created)`.
pub fn load_or_create(data_dir: &Path) -> io::Result<(String, bool)> {
    let path = data_dir.join("token");
    match fs::read_to_string(&path) {
        Ok(t) => {
            let mode = fs::metadata(&path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "token file is readable by others; chmod 600 it");
            }
            let t = t.trim().to_string();
            if t.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is empty; delete it to generate a new token",
                        path.display()
                    ),
                ));
            }
            Ok((t, false))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let token = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            writeln!(f, "{token}")?;
            f.sync_all()?;
            Ok((token, true))
        }
        Err(e) => Err(e),
    }
}
