//! Workers: the list, one worker in detail, and the operator actions on a
//! worker by name (drain, register, unregister, unregister of a machine
//! confirmed dead).

use super::{Api, ApiError};
use crate::engine::{AdminOp, Command};
use crate::views;
use berth_proto::{attempt_to_wire, v1};

/// One worker and the attempts that hold its resources.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerDetail {
    pub worker: v1::Worker,
    pub attempts: Vec<v1::Attempt>,
}

impl Api {
    /// Every worker, by name (then id).
    pub async fn workers(&self) -> Result<Vec<v1::Worker>, ApiError> {
        Ok(self.engine.query(views::workers).await?)
    }

    /// One worker by node id, or by name when only one worker has it.
    pub async fn worker(&self, key: &str) -> Result<WorkerDetail, ApiError> {
        let k = key.to_string();
        let found = self
            .engine
            .query(move |s| {
                let matches: Vec<_> = match s.workers().find(|w| w.id.0 == k) {
                    Some(w) => vec![w],
                    None => s.workers().filter(|w| w.name == k).collect(),
                };
                match matches.as_slice() {
                    [w] => Ok(Some(WorkerDetail {
                        worker: views::worker(s, w),
                        attempts: s
                            .ledger()
                            .attempts_on(&w.id)
                            .filter_map(|a| s.attempt(a))
                            .map(|a| attempt_to_wire(a, &w.name))
                            .collect(),
                    })),
                    [] => Ok(None),
                    many => Err(many.iter().map(|w| w.id.0.clone()).collect::<Vec<_>>()),
                }
            })
            .await?;
        match found {
            Ok(Some(w)) => Ok(w),
            Ok(None) => Err(ApiError::NotFound(format!(
                "no worker has the id or name '{key}'"
            ))),
            Err(ids) => Err(ApiError::Conflict(format!(
                "{} workers are named '{key}'; ask by id: {}",
                ids.len(),
                ids.join(", ")
            ))),
        }
    }

    /// No new placements on the worker; what runs there finishes.
    pub async fn drain(&self, name: &str) -> Result<String, ApiError> {
        self.admin(AdminOp::Drain, name).await
    }

    /// Undo a drain: the worker takes new work again.
    pub async fn undrain(&self, name: &str) -> Result<String, ApiError> {
        self.admin(AdminOp::Undrain, name).await
    }

    /// Allow the name to join a cluster started with
    /// `--require-registration`.
    pub async fn register(&self, name: &str) -> Result<String, ApiError> {
        self.admin(AdminOp::Register, name).await
    }

    /// Remove a drained (or down) worker that runs nothing. With
    /// `confirm_dead`, for a worker declared down whose machine is gone:
    /// its attempts whose fate is unknown are recorded lost first.
    pub async fn unregister(&self, name: &str, confirm_dead: bool) -> Result<String, ApiError> {
        let op = if confirm_dead {
            AdminOp::UnregisterDead
        } else {
            AdminOp::Unregister
        };
        self.admin(op, name).await
    }

    /// Run one operator action; its answer is one line for people.
    async fn admin(&self, op: AdminOp, name: &str) -> Result<String, ApiError> {
        if name.is_empty() {
            return Err(ApiError::invalid("name", "missing; give a worker's name"));
        }
        let name = name.to_string();
        Ok(self
            .engine
            .call(|reply| Command::Admin { op, name, reply })
            .await??)
    }
}
