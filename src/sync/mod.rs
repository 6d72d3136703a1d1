//! Connectors to the stores' systems and the supervisor that schedules them: parsers of what
//! registers send, the `POSLog` folder connector, the sealed store of processed files and dead
//! letters, and the schedule (intervals, peak windows, backoff).

pub mod held;
pub mod inbox;
pub mod poslog;
pub mod push;
pub mod schedule;
pub mod supervisor;

pub use supervisor::{ConnectorState, ConnectorView, Replay, Supervisor, SyncError};
