//! gRPC services: `Control` for clients, `WorkerLink` for workers. Both
//! check the cluster token first and translate between the wire and the
//! engine; no decisions are made here.

mod control;
mod worker_link;

pub use control::ControlService;
pub use worker_link::WorkerLinkService;

use crate::engine::Unavailable;
use tonic::Status;

impl From<Unavailable> for Status {
    fn from(e: Unavailable) -> Status {
        Status::unavailable(e.to_string())
    }
}
