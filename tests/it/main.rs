//! Integration tests: the real application on a temporary folder and an OS-chosen port, used
//! as an operator, a browser or an attacker would. One test binary, a module per feature.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// A test is one user's story from start to end; splitting it would hide the story.
#![allow(clippy::too_many_lines)]

mod accounts;
mod audit;
mod audit_events;
mod audit_page;
mod audit_tamper;
mod backup;
mod browser;
mod catalog_import;
mod cli;
mod crash;
mod crm;
mod customers;
mod customers_api;
mod https;
mod ingest;
mod service;
mod store;
mod support;
mod sync;
mod upgrade;
mod web;
mod webhooks;
