//! What this machine offers: CPU cores, memory, the disk holding the data
//! dir, GPUs (through `nvidia-smi`) and drivers (`docker` when the engine
//! answers on its socket, or when this worker ran containers before). Command-line overrides replace whatever was
//! detected.

use crate::{Detected, WorkerConfig, WorkerError};
use berth_core::{GpuInfo, Resources};
use std::path::Path;
use std::process::Command;

fn memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn disk_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_blocks as u64 * st.f_frsize as u64)
}

/// Parse `nvidia-smi --query-gpu=index,name,memory.total,uuid
/// --format=csv,noheader,nounits` output (memory in MiB).
pub fn parse_nvidia_smi(text: &str) -> Vec<GpuInfo> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f.len() < 4 {
                return None;
            }
            Some(GpuInfo {
                index: f[0].parse().ok()?,
                model: f[1].to_string(),
                memory_bytes: f[2].parse::<u64>().ok()? << 20,
                uuid: f[3].to_string(),
            })
        })
        .collect()
}

/// GPUs as `nvidia-smi` on `PATH` reports them; none if it is absent or fails.
pub fn gpus() -> Vec<GpuInfo> {
    let out = Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,name,memory.total,uuid",
            "--format=csv,noheader,nounits",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => parse_nvidia_smi(&String::from_utf8_lossy(&o.stdout)),
        _ => Vec::new(),
    }
}

/// Load the node id from `DATA_DIR/node_id`, creating it on first start.
pub fn node_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("node_id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            let tmp = data_dir.join("node_id.tmp");
            std::fs::write(&tmp, format!("{id}\n"))?;
            std::fs::rename(&tmp, &path)?;
            Ok(id)
        }
    }
}

pub fn detect(config: &WorkerConfig) -> Result<Detected, WorkerError> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).map_err(|source| WorkerError::DataDir {
        path: dir.clone(),
        source,
    })?;
    let node_id = node_id(dir).map_err(|source| WorkerError::DataDir {
        path: dir.clone(),
        source,
    })?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let mut found_gpus = gpus();
    let gpus = match config.gpus {
        Some(n) => {
            let n = n as usize;
            if found_gpus.len() >= n {
                found_gpus.truncate(n);
                found_gpus
            } else {
                (0..n as u32)
                    .map(|i| {
                        found_gpus.get(i as usize).cloned().unwrap_or(GpuInfo {
                            index: i,
                            model: "unknown (declared with --gpus)".into(),
                            memory_bytes: 0,
                            uuid: String::new(),
                        })
                    })
                    .collect()
            }
        }
        None => found_gpus,
    };
    let total = Resources {
        cpu_millis: config.cpu_millis.unwrap_or(cores * 1000),
        memory_bytes: config.memory_bytes.or_else(memory_bytes).unwrap_or(0),
        storage_bytes: config
            .storage_bytes
            .or_else(|| disk_bytes(dir))
            .unwrap_or(0),
        gpus: gpus.len() as u32,
    };
    let mut drivers = vec!["process".to_string()];
    // A worker that ran containers before keeps its docker driver while the
    // engine is away (its attempts are held and picked up again).
    if crate::docker::engine_answers() || crate::docker::used_before(dir) {
        drivers.push("docker".to_string());
    }
    Ok(Detected {
        total,
        gpus,
        drivers,
        node_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nvidia_smi_csv() {
        let g = parse_nvidia_smi(
            "0, NVIDIA A100-SXM4-40GB, 40960, GPU-aaa\n1, NVIDIA A100-SXM4-40GB, 40960, GPU-bbb\n",
        );
        assert_eq!(g.len(), 2);
        assert_eq!(g[1].index, 1);
        assert_eq!(g[0].memory_bytes, 40960 << 20);
        assert_eq!(g[1].uuid, "GPU-bbb");
        assert!(parse_nvidia_smi("garbage\n").is_empty());
    }

    #[test]
    fn node_id_is_stable() {
        let d = tempfile::tempdir().unwrap();
        let a = node_id(d.path()).unwrap();
        let b = node_id(d.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 36);
    }
}
