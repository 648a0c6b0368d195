//! The allocation audit on demand (`reconcile`, `fix-resources`).

use super::{Api, ApiError};
use crate::engine::Command;
use crate::views;
use berth_proto::v1;

impl Api {
    /// Compare every worker's allocation with its attempts and the stored
    /// records with the state; fix what differs unless `dry_run`.
    pub async fn reconcile(&self, dry_run: bool) -> Result<v1::ReconcileResponse, ApiError> {
        let report = self
            .engine
            .call(|reply| Command::Reconcile { dry_run, reply })
            .await?
            .map_err(|e| ApiError::Internal(format!("reconciling: {e}")))?;
        Ok(views::reconcile(report))
    }
}
