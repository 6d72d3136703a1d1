//! Integration tests: the real application on a temporary folder and an OS-chosen port, used
//! as an operator, a browser or an attacker would. One test binary, a module per feature.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cli;
mod crash;
mod https;
mod store;
mod support;
