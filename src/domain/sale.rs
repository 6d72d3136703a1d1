//! Sales as registers report them, normalised: money in integer minor units of the
//! transaction's currency, quantities in thousandths (weighed items), identities of the
//! customer as the register saw them. Card numbers never get this far unmasked (see
//! [`super::card`]).

use jiff::civil::{Date, DateTime};
use serde::{Deserialize, Serialize};

/// What a transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionKind {
    Sale,
    Return,
    /// Cancelled at the register: recorded, moves no stock and no spend.
    Void,
    /// Sign-on, till loans, and other non-sale records: recorded as seen, nothing else.
    Control,
}

/// The natural key of a register transaction: the same key arriving again changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TransactionKey {
    /// The store's code as the POS knows it.
    pub store: String,
    pub register: String,
    pub business_day: Date,
    pub sequence: u64,
}

impl TransactionKey {
    /// `store/register/day/sequence`, for messages and store keys.
    #[must_use]
    pub fn to_key_string(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.store, self.register, self.business_day, self.sequence
        )
    }
}

/// One transaction from a register. As JSON (the ingest API), fields with a default may be
/// left out; unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaleTransaction {
    pub key: TransactionKey,
    pub kind: TransactionKind,
    /// ISO 4217.
    pub currency: String,
    #[serde(default)]
    pub operator: Option<String>,
    #[serde(default)]
    pub started_at: Option<DateTime>,
    #[serde(default)]
    pub ended_at: Option<DateTime>,
    pub lines: Vec<SaleLine>,
    #[serde(default)]
    pub tenders: Vec<Tender>,
    /// The register's grand total, minor units, when it gave one.
    #[serde(default)]
    pub total: Option<i64>,
    #[serde(default)]
    pub customer: CustomerRefs,
    /// Vendor extension elements kept as seen (`acs:LoyaltyID` → text), card numbers masked.
    #[serde(default)]
    pub extensions: Vec<(String, String)>,
}

impl SaleTransaction {
    /// Spend of the transaction in minor units: lines sold minus lines returned minus
    /// discounts; zero for voids and control records.
    #[must_use]
    pub fn net_amount(&self) -> i64 {
        if matches!(self.kind, TransactionKind::Void | TransactionKind::Control) {
            return 0;
        }
        self.lines
            .iter()
            .filter(|l| !l.voided)
            .map(|l| {
                let amount = l.extended - l.discount;
                if l.returned { -amount } else { amount }
            })
            .sum()
    }
}

/// One item line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaleLine {
    #[serde(default)]
    pub line_no: u32,
    /// The item id the register used (SKU or GTIN).
    pub sku: String,
    #[serde(default)]
    pub gtin: Option<String>,
    #[serde(default)]
    pub description: String,
    /// Thousandths of a unit: 1 item is 1000, 0.42 kg is 420.
    pub quantity_milli: i64,
    #[serde(default)]
    pub unit_price: i64,
    pub extended: i64,
    #[serde(default)]
    pub discount: i64,
    #[serde(default)]
    pub discount_codes: Vec<String>,
    /// A return line (stock comes back, spend goes down).
    #[serde(default)]
    pub returned: bool,
    /// Voided at the register.
    #[serde(default)]
    pub voided: bool,
}

/// A payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tender {
    /// `Cash`, `CreditDebit`, `GiftCard`, ...
    pub kind: String,
    pub amount: i64,
    /// Change given back (cash), in minor units.
    #[serde(default)]
    pub change: i64,
    /// First six and last four digits, when the register sent a card number.
    #[serde(default)]
    pub card_masked: Option<String>,
}

/// Identities of the customer as the register saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CustomerRefs {
    pub loyalty_id: Option<String>,
    pub email: Option<String>,
    pub external_id: Option<String>,
}

impl CustomerRefs {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.loyalty_id.is_none() && self.email.is_none() && self.external_id.is_none()
    }
}

/// Digits after the decimal point of a currency's minor unit (ISO 4217).
#[must_use]
pub fn minor_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// Reads a decimal amount (`"2.99"`, `"-0.19"`) as minor units with `digits` decimals; more
/// decimals than that are refused rather than rounded.
pub fn parse_decimal(text: &str, digits: u32) -> Result<i64, String> {
    let t = text.trim();
    let (negative, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("{t:?} is not a decimal number"));
    }
    let frac_trimmed = frac.trim_end_matches('0');
    if frac_trimmed.len() > digits as usize {
        return Err(format!("{t:?} has more than {digits} decimals"));
    }
    let scale = 10i64.pow(digits);
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| format!("{t:?} is too large"))?
    };
    let mut frac_value: i64 = 0;
    for (k, b) in frac_trimmed.bytes().enumerate() {
        frac_value += i64::from(b - b'0') * 10i64.pow(digits - 1 - k as u32);
    }
    let value = whole
        .checked_mul(scale)
        .and_then(|w| w.checked_add(frac_value))
        .ok_or_else(|| format!("{t:?} is too large"))?;
    Ok(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_become_minor_units_without_rounding() {
        assert_eq!(parse_decimal("2.99", 2), Ok(299));
        assert_eq!(parse_decimal("-0.19", 2), Ok(-19));
        assert_eq!(parse_decimal("1", 2), Ok(100));
        assert_eq!(parse_decimal("0.420", 3), Ok(420));
        assert!(parse_decimal("1.50", 0).is_err());
        assert_eq!(parse_decimal("1.500", 2), Ok(150));
        assert!(parse_decimal("1.234", 2).is_err());
        assert!(parse_decimal("abc", 2).is_err());
        assert!(parse_decimal("", 2).is_err());
        assert!(parse_decimal("99999999999999999999", 2).is_err());
        assert_eq!(minor_digits("JPY"), 0);
        assert_eq!(minor_digits("KWD"), 3);
    }
}
