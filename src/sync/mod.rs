//! Connectors to the stores' systems: parsers of what registers and ERPs send, and (as they
//! arrive) the supervisor that schedules them.

pub mod inbox;
pub mod poslog;
