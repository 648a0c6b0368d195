//! berth-core: the vocabulary every other crate speaks.
//!
//! Owns ids, exact resource arithmetic (`resources`), unit parsing and
//! formatting at the user edge (`units`), the one parser of task requests
//! (`spec_input`: every face builds a `SpecInput`), the task / attempt / worker state
//! machines and their records, and validation of user input. No I/O, no
//! async, no clocks: time is always passed in as milliseconds since the Unix
//! epoch.

pub mod attempt;
pub mod ids;
pub mod names;
pub mod resources;
pub mod settings;
pub mod spec_input;
pub mod task;
pub mod units;
pub mod validate;
pub mod worker;

pub use attempt::{AttemptRecord, AttemptState};
pub use ids::{AttemptId, TaskId, WorkerId};
pub use names::UnknownName;
pub use resources::{Resources, Shortfall};
pub use spec_input::{Raw, SpecInput, build_spec};
pub use task::{DriverKind, Strategy, TaskEvent, TaskRecord, TaskSpec, TaskState, TransitionError};
pub use worker::{GpuInfo, WorkerRecord, WorkerState};

/// Milliseconds since the Unix epoch. Passed in, never read, by core code.
pub type Millis = i64;
