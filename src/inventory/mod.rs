//! Inventory truth: the catalog of products, the ledger of stock movements with its running
//! totals, and the ingest of register sales that moves both stock and customer figures.
//!
//! Store layout (every value sealed):
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `products` | SKU | [`crate::domain::product::Product`] |
//! | `product_gtins` | GTIN | SKU |
//! | `stock_levels` | SKU, 0, location code | [`crate::domain::stock::StockLevel`] |
//! | `stock_moves` | SKU, 0, location code, 0, sequence (u64 BE) | [`crate::domain::stock::StockMovement`] |
//! | `sales` | transaction key (`store/register/day/sequence`) | [`ingest::SaleRecord`] |
//! | `customer_sales` | customer id + purchase number (u64 BE) | transaction key |
//! | `customer_sale_summary` | customer id | [`ingest::SaleSummary`], under the customer's key |
//! | `idempotency` | SHA-256 of caller and `Idempotency-Key` | [`ingest::IdempotentAnswer`] |

pub mod catalog;
pub mod import;
pub mod ingest;
pub mod ledger;

use crate::domain::customer::FieldError;
use crate::store::StoreError;

/// Why an inventory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    #[error("gtin: {gtin} already belongs to product {sku}")]
    GtinTaken { gtin: String, sku: String },
    #[error("no product {0}")]
    NotFound(String),
    #[error(
        "{what} kept changing under concurrent writes ({attempts} attempts); send it again \
         (it is idempotent)"
    )]
    Contended { what: &'static str, attempts: usize },
    #[error(
        "this Idempotency-Key was used before with a different body; use a new key for a new \
         request"
    )]
    IdempotencyReused,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl InventoryError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }
}
