//! The one resource arithmetic. Ranking (scheduler), committing (master) and
//! admission (worker) all call [`Resources::fits_within`]; there is no second
//! copy of this rule anywhere.
//!
//! Units are exact integers: CPU in millicores, memory and storage in bytes,
//! GPUs as whole devices. All arithmetic is checked; nothing saturates
//! silently.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount of every resource a task can ask for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub storage_bytes: u64,
    pub gpus: u32,
}

/// Which dimension a request does not fit in, and by how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    pub resource: &'static str,
    pub requested: u64,
    pub available: u64,
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (r, a) = match self.resource {
            "cpu" => (
                crate::units::format_cores(self.requested),
                crate::units::format_cores(self.available),
            ),
            "gpu" => (self.requested.to_string(), self.available.to_string()),
            _ => (
                crate::units::format_gb(self.requested),
                crate::units::format_gb(self.available),
            ),
        };
        write!(f, "{} needs {r}, {a} available", self.resource)
    }
}

impl Resources {
    pub const ZERO: Resources = Resources {
        cpu_millis: 0,
        memory_bytes: 0,
        storage_bytes: 0,
        gpus: 0,
    };

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(&self, other: &Resources) -> Option<Resources> {
        Some(Resources {
            cpu_millis: self.cpu_millis.checked_add(other.cpu_millis)?,
            memory_bytes: self.memory_bytes.checked_add(other.memory_bytes)?,
            storage_bytes: self.storage_bytes.checked_add(other.storage_bytes)?,
            gpus: self.gpus.checked_add(other.gpus)?,
        })
    }

    /// `self - other`, or `None` if any dimension would go negative.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        Some(Resources {
            cpu_millis: self.cpu_millis.checked_sub(other.cpu_millis)?,
            memory_bytes: self.memory_bytes.checked_sub(other.memory_bytes)?,
            storage_bytes: self.storage_bytes.checked_sub(other.storage_bytes)?,
            gpus: self.gpus.checked_sub(other.gpus)?,
        })
    }

    /// `self - other` clamped at zero per dimension (for display of
    /// "available" only; never used to decide a placement).
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            storage_bytes: self.storage_bytes.saturating_sub(other.storage_bytes),
            gpus: self.gpus.saturating_sub(other.gpus),
        }
    }

    /// Every dimension of `self` is ≤ the same dimension of `other`.
    pub fn le(&self, other: &Resources) -> bool {
        self.cpu_millis <= other.cpu_millis
            && self.memory_bytes <= other.memory_bytes
            && self.storage_bytes <= other.storage_bytes
            && self.gpus <= other.gpus
    }

    /// Does a request of `self` fit on a worker with `total` capacity of
    /// which `allocated` is already bound? The one rule for "fits".
    pub fn fits_within(&self, allocated: &Resources, total: &Resources) -> Result<(), Shortfall> {
        let free = total.saturating_sub(allocated);
        let dims: [(&'static str, u64, u64); 4] = [
            ("cpu", self.cpu_millis, free.cpu_millis),
            ("memory", self.memory_bytes, free.memory_bytes),
            ("storage", self.storage_bytes, free.storage_bytes),
            ("gpu", self.gpus as u64, free.gpus as u64),
        ];
        for (resource, requested, available) in dims {
            if requested > available {
                return Err(Shortfall {
                    resource,
                    requested,
                    available,
                });
            }
        }
        Ok(())
    }

    /// Utilisation after adding `self` to `allocated`, in parts per million
    /// of the most-used dimension. Integer-only so ranking is exact and
    /// deterministic.
    pub fn utilisation_ppm(allocated: &Resources, total: &Resources) -> u64 {
        fn ratio(a: u64, t: u64) -> u64 {
            if t == 0 {
                0
            } else {
                ((a as u128 * 1_000_000) / t as u128) as u64
            }
        }
        ratio(allocated.cpu_millis, total.cpu_millis)
            .max(ratio(allocated.memory_bytes, total.memory_bytes))
            .max(ratio(allocated.storage_bytes, total.storage_bytes))
            .max(ratio(allocated.gpus as u64, total.gpus as u64))
    }
}

impl std::iter::Sum for Resources {
    /// Sum for computing a ledger. Panics on overflow, which cannot happen
    /// for validated requests on validated workers (both are bounded far
    /// below `u64::MAX / 2^20`).
    fn sum<I: Iterator<Item = Resources>>(iter: I) -> Resources {
        iter.fold(Resources::ZERO, |acc, r| {
            acc.checked_add(&r).expect("resource sum overflow")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(cpu: u64, mem: u64) -> Resources {
        Resources {
            cpu_millis: cpu,
            memory_bytes: mem,
            ..Resources::ZERO
        }
    }

    #[test]
    fn fits_exactly_at_capacity_but_not_one_over() {
        let total = r(20_000, 8 << 30);
        let alloc = r(15_000, 0);
        assert!(r(5_000, 1).fits_within(&alloc, &total).is_ok());
        let err = r(5_001, 1).fits_within(&alloc, &total).unwrap_err();
        assert_eq!(err.resource, "cpu");
        assert_eq!(err.available, 5_000);
    }

    #[test]
    fn sub_refuses_to_go_negative() {
        assert_eq!(r(1, 0).checked_sub(&r(2, 0)), None);
        assert_eq!(r(3, 5).checked_sub(&r(2, 5)), Some(r(1, 0)));
    }

    #[test]
    fn utilisation_takes_most_used_dimension() {
        let total = r(10_000, 100);
        assert_eq!(Resources::utilisation_ppm(&r(5_000, 10), &total), 500_000);
        assert_eq!(Resources::utilisation_ppm(&r(1_000, 90), &total), 900_000);
    }
}
