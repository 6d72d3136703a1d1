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
