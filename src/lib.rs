//! Clientele: an on-premise retail CRM appliance for regulated retailers.
//!
//! [`app::start`] builds and starts the whole application from a [`config::Config`]; `main`
//! and the integration tests both call it.

pub mod app;
pub mod audit;
pub mod auth;
pub mod backups;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod crm;
pub mod domain;
pub mod inventory;
pub mod logging;
pub mod store;
pub mod sync;
pub mod web;

/// Locks a mutex; a panic that poisoned it elsewhere does not stop the rest of the appliance
/// (the data behind our mutexes stays consistent between statements).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
