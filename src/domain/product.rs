//! Products of the catalog: what a SKU is, what it sells for and what it costs, in integer
//! minor units of one ISO 4217 currency. A protected product (luxury, regulated) never sells
//! below its margin floor: its price must keep at least that share of the price as margin.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::customer::FieldError;

/// Longest SKU (characters).
pub const MAX_SKU: usize = 64;
/// Most attributes and complementary SKUs on one product.
pub const MAX_LIST: usize = 50;
/// Longest name, brand, category or attribute value (characters).
const MAX_TEXT: usize = 200;

/// One product of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub sku: String,
    /// GTIN-8, -12, -13 or -14, digits only, check digit verified.
    pub gtin: Option<String>,
    pub name: String,
    pub brand: String,
    pub category: String,
    /// Size, colour, material...: name to value.
    pub attributes: BTreeMap<String, String>,
    /// Selling price, minor units.
    pub price: i64,
    /// Unit cost, minor units.
    pub cost: i64,
    /// ISO 4217, upper case.
    pub currency: String,
    /// Smallest margin allowed, in basis points of the price (3000 = 30 %).
    pub margin_floor_bp: u32,
    /// Never discounted below the margin floor, by people or by automatic actions.
    pub protected: bool,
    /// SKUs sold with this one (next-best offer).
    pub complementary: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Product {
    /// Margin of the current price in basis points of the price (negative below cost).
    #[must_use]
    pub fn margin_bp(&self) -> i64 {
        margin_bp(self.price, self.cost)
    }

    /// The lowest price that keeps the margin floor, in minor units (rounded up).
    #[must_use]
    pub fn floor_price(&self) -> i64 {
        let keep = 10_000 - i64::from(self.margin_floor_bp.min(9_999));
        // cost / (1 - floor), rounded up.
        (self.cost * 10_000 + keep - 1) / keep
    }
}

/// Margin of `price` over `cost`, in basis points of the price.
#[must_use]
pub fn margin_bp(price: i64, cost: i64) -> i64 {
    if price <= 0 {
        return 0;
    }
    (price - cost) * 10_000 / price
}

/// What `PUT /api/v1/products/{sku}` takes; the SKU comes from the path.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProductInput {
    #[serde(default)]
    pub gtin: Option<String>,
    pub name: String,
    #[serde(default)]
    pub brand: String,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    pub price: i64,
    #[serde(default)]
    pub cost: i64,
    pub currency: String,
    #[serde(default)]
    pub margin_floor_bp: u32,
    #[serde(default)]
    pub protected: bool,
    #[serde(default)]
    pub complementary: Vec<String>,
}

/// Checks a SKU: 1 to 64 letters, digits, `-`, `_`, `.` or `/`.
pub fn check_sku(field: &str, sku: &str) -> Result<String, FieldError> {
    let sku = sku.trim();
    if sku.is_empty()
        || sku.chars().count() > MAX_SKU
        || !sku
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        return Err(FieldError {
            field: field.to_owned(),
            message: format!(
                "{sku:?} is not a SKU: use 1 to {MAX_SKU} letters, digits, '-', '_', '.' or '/'"
            ),
        });
    }
    Ok(sku.to_owned())
}

/// Checks a GTIN's length and check digit.
pub fn check_gtin(field: &str, gtin: &str) -> Result<String, FieldError> {
    let gtin = gtin.trim();
    let error = |message: &str| FieldError {
        field: field.to_owned(),
        message: format!("{gtin:?} {message}"),
    };
    if !matches!(gtin.len(), 8 | 12 | 13 | 14) || !gtin.bytes().all(|b| b.is_ascii_digit()) {
        return Err(error("is not a GTIN (8, 12, 13 or 14 digits)"));
    }
    let digits: Vec<u32> = gtin.bytes().map(|b| u32::from(b - b'0')).collect();
    let Some((check, body)) = digits.split_last() else {
        return Err(error("is empty"));
    };
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| if i % 2 == 0 { d * 3 } else { *d })
        .sum();
    if (10 - sum % 10) % 10 != *check {
        return Err(error("has a wrong check digit"));
    }
    Ok(gtin.to_owned())
}

fn text(field: &str, value: &str, required: bool, errors: &mut Vec<FieldError>) -> String {
    let value = value.trim();
    if required && value.is_empty() {
        errors.push(FieldError {
            field: field.to_owned(),
            message: "is required".into(),
        });
    } else if value.chars().count() > MAX_TEXT || value.chars().any(char::is_control) {
        errors.push(FieldError {
            field: field.to_owned(),
            message: format!("at most {MAX_TEXT} characters, no control characters"),
        });
    }
    value.to_owned()
}

fn clean_complementary(sku: &str, input: &[String], errors: &mut Vec<FieldError>) -> Vec<String> {
    if input.len() > MAX_LIST {
        errors.push(FieldError {
            field: "complementary".into(),
            message: format!("at most {MAX_LIST} SKUs"),
        });
    }
    let mut complementary = Vec::new();
    for (i, c) in input.iter().enumerate() {
        match check_sku(&format!("complementary[{i}]"), c) {
            Ok(c) if c == sku => errors.push(FieldError {
                field: format!("complementary[{i}]"),
                message: "a product is not complementary to itself".into(),
            }),
            Ok(c) if !complementary.contains(&c) => complementary.push(c),
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    complementary
}

impl ProductInput {
    /// Checks every field and builds the product; every problem is reported with its field.
    pub fn clean(
        self,
        sku: &str,
        created_at: Timestamp,
        now: Timestamp,
    ) -> Result<Product, Vec<FieldError>> {
        let mut errors = Vec::new();
        let sku = check_sku("sku", sku)
            .map_err(|e| errors.push(e))
            .unwrap_or_default();
        let gtin = match self.gtin.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(g) => check_gtin("gtin", g).map_err(|e| errors.push(e)).ok(),
        };
        let name = text("name", &self.name, true, &mut errors);
        let brand = text("brand", &self.brand, false, &mut errors);
        let category = text("category", &self.category, false, &mut errors);
        if self.attributes.len() > MAX_LIST {
            errors.push(FieldError {
                field: "attributes".into(),
                message: format!("at most {MAX_LIST} attributes"),
            });
        }
        let mut attributes = BTreeMap::new();
        for (k, v) in &self.attributes {
            let key = text(&format!("attributes.{k}"), k, true, &mut errors);
            let value = text(&format!("attributes.{k}"), v, false, &mut errors);
            attributes.insert(key, value);
        }
        let currency = self.currency.trim().to_ascii_uppercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            errors.push(FieldError {
                field: "currency".into(),
                message: format!("{currency:?} is not an ISO 4217 code (EUR, USD)"),
            });
        }
        for (field, value) in [("price", self.price), ("cost", self.cost)] {
            if value < 0 {
                errors.push(FieldError {
                    field: field.into(),
                    message: format!("{value} is negative; give minor units (cents) >= 0"),
                });
            }
        }
        if self.margin_floor_bp >= 10_000 {
            errors.push(FieldError {
                field: "margin_floor_bp".into(),
                message: format!(
                    "{} is not below 10000 (basis points of the price)",
                    self.margin_floor_bp
                ),
            });
        }
        let complementary = clean_complementary(&sku, &self.complementary, &mut errors);
        let product = Product {
            sku,
            gtin,
            name,
            brand,
            category,
            attributes,
            price: self.price,
            cost: self.cost,
            currency,
            margin_floor_bp: self.margin_floor_bp,
            protected: self.protected,
            complementary,
            created_at,
            updated_at: now,
        };
        if errors.is_empty()
            && product.protected
            && product.margin_bp() < i64::from(product.margin_floor_bp)
        {
            errors.push(FieldError {
                field: "price".into(),
                message: format!(
                    "{} keeps a margin of {} bp, below the floor of {} bp of this protected \
                     product; the lowest allowed price is {}",
                    product.price,
                    product.margin_bp(),
                    product.margin_floor_bp,
                    product.floor_price()
                ),
            });
        }
        if errors.is_empty() {
            Ok(product)
        } else {
            Err(errors)
        }
    }
}

/// Names of the fields that differ between two versions of a product (for the audit entry).
#[must_use]
pub fn changed_fields(old: &Product, new: &Product) -> Vec<&'static str> {
    let mut out = Vec::new();
    let pairs: [(&'static str, bool); 11] = [
        ("gtin", old.gtin != new.gtin),
        ("name", old.name != new.name),
        ("brand", old.brand != new.brand),
        ("category", old.category != new.category),
        ("attributes", old.attributes != new.attributes),
        ("price", old.price != new.price),
        ("cost", old.cost != new.cost),
        ("currency", old.currency != new.currency),
        (
            "margin_floor_bp",
            old.margin_floor_bp != new.margin_floor_bp,
        ),
        ("protected", old.protected != new.protected),
        ("complementary", old.complementary != new.complementary),
    ];
    for (name, changed) in pairs {
        if changed {
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> ProductInput {
        ProductInput {
            gtin: Some("4006381333931".into()),
            name: "Red scarf".into(),
            price: 4990,
            cost: 2000,
            currency: "eur".into(),
            margin_floor_bp: 5000,
            protected: true,
            complementary: vec!["GLOVES-M".into()],
            ..ProductInput::default()
        }
    }

    #[test]
    fn a_valid_product_is_cleaned() {
        let p = input()
            .clean("SKU-RED", Timestamp::UNIX_EPOCH, Timestamp::UNIX_EPOCH)
            .unwrap();
        assert_eq!(p.currency, "EUR");
        assert_eq!(p.margin_bp(), 5991);
        assert_eq!(p.floor_price(), 4000);
    }

    #[test]
    fn every_bad_field_is_named() {
        let bad = ProductInput {
            gtin: Some("4006381333932".into()),
            name: " ".into(),
            price: -1,
            currency: "euro".into(),
            complementary: vec!["SKU RED".into()],
            ..input()
        };
        let errors = bad
            .clean("bad sku!", Timestamp::UNIX_EPOCH, Timestamp::UNIX_EPOCH)
            .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "sku",
                "gtin",
                "name",
                "currency",
                "price",
                "complementary[0]"
            ]
        );
    }

    #[test]
    fn a_protected_product_keeps_its_margin_floor() {
        let cheap = ProductInput {
            price: 3999,
            ..input()
        };
        let errors = cheap
            .clean("SKU-RED", Timestamp::UNIX_EPOCH, Timestamp::UNIX_EPOCH)
            .unwrap_err();
        assert!(errors[0].message.contains("lowest allowed price is 4000"));
        let unprotected = ProductInput {
            price: 3999,
            protected: false,
            ..input()
        };
        assert!(
            unprotected
                .clean("SKU-RED", Timestamp::UNIX_EPOCH, Timestamp::UNIX_EPOCH)
                .is_ok()
        );
    }

    #[test]
    fn gtin_check_digits() {
        assert!(check_gtin("g", "96385074").is_ok());
        assert!(check_gtin("g", "036000291452").is_ok());
        assert!(check_gtin("g", "00000000067591").is_ok());
        assert!(check_gtin("g", "00000000067592").is_err());
        assert!(check_gtin("g", "12345").is_err());
    }
}
