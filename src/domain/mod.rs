//! Plain domain types shared by every layer. Nothing here knows about storage, HTTP or time
//! sources.

pub mod account;
pub mod card;
pub mod customer;
pub mod id;
pub mod product;
pub mod sale;
pub mod stock;

pub use id::Id;
