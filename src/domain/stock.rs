//! Stock per SKU and location as a ledger of movements. Quantities are thousandths of a unit
//! (a weighed 0.42 kg is 420), signed: negative takes stock out of the location.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Why stock moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    /// Sold at a register (out).
    Sale,
    /// Brought back by a customer (in).
    Return,
    /// Delivered by a supplier or the ERP (in).
    Receipt,
    /// Sent to or received from another location.
    Transfer,
    /// Corrected by hand or by the ERP (loss, damage, found stock).
    Adjustment,
    /// Counted on the shelf (RFID, stocktake): on-hand becomes the count.
    Count,
}

impl MovementKind {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sale => "sale",
            Self::Return => "return",
            Self::Receipt => "receipt",
            Self::Transfer => "transfer",
            Self::Adjustment => "adjustment",
            Self::Count => "count",
        }
    }
}

/// One movement of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockMovement {
    /// Position in this SKU and location's ledger, from 1.
    pub seq: u64,
    pub sku: String,
    /// The location's code as POS and ERP know it.
    pub location: String,
    pub kind: MovementKind,
    /// Signed change of on-hand, thousandths.
    pub quantity_milli: i64,
    /// On-hand right after this movement, thousandths.
    pub on_hand_after: i64,
    pub at: Timestamp,
    /// What caused it: a transaction key (`S001/3/2026-11-27/1042`), a receipt number...
    pub reference: String,
    /// The SKU was not in the catalog when the movement was recorded.
    pub unknown_sku: bool,
}

/// The running totals of one SKU at one location, written with every movement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    pub sku: String,
    pub location: String,
    pub on_hand_milli: i64,
    /// Promised to orders not yet picked up.
    pub reserved_milli: i64,
    /// Kept back so the shelf is never shown empty-but-sellable.
    pub safety_milli: i64,
    /// Movements so far (the sequence number of the newest).
    pub movements: u64,
    pub updated_at: Option<Timestamp>,
    /// Some movement named a SKU missing from the catalog.
    pub unknown_sku: bool,
}

impl StockLevel {
    /// What can be sold now: on-hand minus reserved minus safety stock.
    #[must_use]
    pub fn available_milli(&self) -> i64 {
        self.on_hand_milli - self.reserved_milli - self.safety_milli
    }
}

/// Thousandths as a decimal for people and JSON (`1.5`, `-2`, `0.42`).
#[must_use]
pub fn format_milli(value: i64) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let whole = value.abs() / 1000;
    let frac = value.abs() % 1000;
    if frac == 0 {
        format!("{sign}{whole}")
    } else {
        let digits = format!("{frac:03}");
        format!("{sign}{whole}.{}", digits.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_and_formatting() {
        let level = StockLevel {
            on_hand_milli: 10_000,
            reserved_milli: 2_000,
            safety_milli: 1_500,
            ..StockLevel::default()
        };
        assert_eq!(level.available_milli(), 6_500);
        assert_eq!(format_milli(6_500), "6.5");
        assert_eq!(format_milli(-420), "-0.42");
        assert_eq!(format_milli(3_000), "3");
    }
}
