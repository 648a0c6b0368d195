//! The one way an enum's wire name becomes the enum: `FromStr` for every
//! named enum of core (task, attempt and worker states, drivers,
//! strategies), so a string from the wire or the user is parsed once, at
//! the boundary, and compared as a typed value after that.

use crate::{AttemptState, DriverKind, Strategy, TaskState, WorkerState};
use std::fmt;
use std::str::FromStr;

/// A name that is none of an enum's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    /// What was expected (`task state`, `driver` …).
    pub kind: &'static str,
    pub text: String,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' is not a {}", self.text, self.kind)
    }
}

impl std::error::Error for UnknownName {}

macro_rules! from_name {
    ($ty:ty, $kind:literal) => {
        impl FromStr for $ty {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, UnknownName> {
                <$ty>::parse(s).ok_or_else(|| UnknownName {
                    kind: $kind,
                    text: s.to_string(),
                })
            }
        }
    };
}

from_name!(TaskState, "task state");
from_name!(AttemptState, "attempt state");
from_name!(WorkerState, "worker state");
from_name!(DriverKind, "driver");
from_name!(Strategy, "strategy");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back() {
        for t in TaskState::ALL {
            assert_eq!(t.as_str().parse::<TaskState>(), Ok(t));
        }
        for a in AttemptState::ALL {
            assert_eq!(a.as_str().parse::<AttemptState>(), Ok(a));
        }
        for w in [WorkerState::Ready, WorkerState::Draining, WorkerState::Down] {
            assert_eq!(w.as_str().parse::<WorkerState>(), Ok(w));
        }
        assert_eq!("docker".parse::<DriverKind>(), Ok(DriverKind::Docker));
        assert_eq!("spread".parse::<Strategy>(), Ok(Strategy::Spread));
        let e = "done".parse::<TaskState>().unwrap_err();
        assert_eq!(e.to_string(), "'done' is not a task state");
    }
}
