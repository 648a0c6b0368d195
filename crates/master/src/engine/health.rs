//! What the engine tells the outside about itself (running, store
//! writable, commit failures), read by `/healthz` and `/metrics` without a
//! trip through the engine thread.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::Unavailable;

/// What the engine tells the outside about itself: read by `/healthz` and
/// `/metrics` without a trip through the engine thread.
#[derive(Debug, Default)]
pub struct Health {
    /// The engine thread has ended (it never restarts).
    pub(super) stopped: AtomicBool,
    /// Batches whose commit failed, since start.
    pub(super) commit_failures: AtomicU64,
    /// While writes fail: the cause, as callers see it.
    storage_fault: Mutex<Option<String>>,
}

impl Health {
    /// `Ok` while the engine runs and writes are accepted; otherwise why not.
    pub fn check(&self) -> Result<(), String> {
        if self.stopped.load(Ordering::Relaxed) {
            return Err(Unavailable::Stopped.to_string());
        }
        match &*self.storage_fault.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(cause) => Err(format!("writes are refused: {cause}")),
            None => Ok(()),
        }
    }

    pub fn commit_failures(&self) -> u64 {
        self.commit_failures.load(Ordering::Relaxed)
    }

    pub(super) fn set_fault(&self, cause: Option<String>) {
        *self.storage_fault.lock().unwrap_or_else(|e| e.into_inner()) = cause;
    }

    pub(super) fn faulty(&self) -> bool {
        self.storage_fault
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}
