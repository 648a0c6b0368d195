//! Task logs on the master: one file per attempt under `DATA_DIR/logs`,
//! written at the offsets the worker sends (so a resent chunk overwrites
//! itself and nothing is duplicated) and read back for `logs` / `monitor`.

use berth_core::AttemptId;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Largest chunk a worker may send.
pub const MAX_CHUNK: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct LogStore {
    dir: PathBuf,
}

impl LogStore {
    pub fn open(dir: PathBuf) -> io::Result<LogStore> {
        fs::create_dir_all(&dir)?;
        Ok(LogStore { dir })
    }

    fn path(&self, a: AttemptId) -> PathBuf {
        self.dir.join(format!("{}.log", a.0))
    }

    /// Write `data` at `offset` of the attempt's log.
    pub fn write(&self, a: AttemptId, offset: u64, data: &[u8]) -> io::Result<()> {
        if data.len() > MAX_CHUNK {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("log chunk of {} bytes exceeds {MAX_CHUNK}", data.len()),
            ));
        }
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(self.path(a))?;
        f.write_all_at(data, offset)
    }

    /// How many bytes the attempt's log holds (0 if it has none yet).
    pub fn size(&self, a: AttemptId) -> io::Result<u64> {
        match fs::metadata(self.path(a)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Read up to `max` bytes from `offset`; empty at the end (or if the
    /// attempt has no log yet).
    pub fn read(&self, a: AttemptId, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        let f = match File::open(self.path(a)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut buf = vec![0u8; max];
        let n = f.read_at(&mut buf, offset)?;
        buf.truncate(n);
        Ok(buf)
    }
}
