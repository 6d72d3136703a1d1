//! Customer export to CSV, for managers and admins; every export is an audited event
//! (`customer.exported`, with the number of customers, never their data).
//!
//! The columns are the importer's (see [`super::import::COLUMNS`]), so an exported file
//! imports back unchanged. Cells that a spreadsheet would run as a formula (starting with `=`,
//! `+`, `-`, `@`, a tab or a carriage return) get a leading apostrophe, which the importer
//! removes again; phone numbers in E.164 (`+44...`) are such cells.
//!
//! Merged-away and erased profiles are not exported.

use std::io::Write;

use crate::audit::{Action, Actor, Event};
use crate::domain::customer::{Channel, Customer};
use crate::store::StoreError;

use super::import::LIST_SEPARATOR;
use super::{CUSTOMERS, CrmError, Customers};

/// The header row of an export.
pub const EXPORT_COLUMNS: &[&str] = &[
    "id",
    "given_name",
    "family_name",
    "email",
    "phone",
    "address_line1",
    "address_line2",
    "postcode",
    "city",
    "region",
    "country",
    "birthday",
    "loyalty_id",
    "external_ids",
    "tags",
    "preferred_channel",
    "consent_email",
    "consent_sms",
    "consent_push",
    "consent_post",
    "created_at",
    "updated_at",
];

/// A cell a spreadsheet will show as text: formula starters get a leading apostrophe.
#[must_use]
pub fn safe_cell(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{text}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

fn joined(values: &[String]) -> String {
    values.join(&LIST_SEPARATOR.to_string())
}

fn consent_cell(customer: &Customer, channel: Channel) -> &'static str {
    match customer.consent(channel).map(|c| c.granted) {
        Some(true) => "yes",
        Some(false) => "no",
        None => "",
    }
}

/// The cells of one customer, in [`EXPORT_COLUMNS`] order.
fn row_of(c: &Customer) -> Vec<String> {
    let address = c.addresses.first().cloned().unwrap_or_default();
    let external: Vec<String> = c
        .external_ids
        .iter()
        .map(|e| format!("{}:{}", e.source, e.id))
        .collect();
    vec![
        c.id.to_string(),
        c.given_name.clone(),
        c.family_name.clone(),
        joined(&c.emails),
        joined(&c.phones),
        address.line1,
        address.line2,
        address.postcode,
        address.city,
        address.region,
        address.country,
        c.birthday.map(|b| b.to_string()).unwrap_or_default(),
        joined(&c.loyalty_ids),
        joined(&external),
        joined(&c.tags),
        c.preferred_channel
            .map(|ch| ch.as_str().to_owned())
            .unwrap_or_default(),
        consent_cell(c, Channel::Email).to_owned(),
        consent_cell(c, Channel::Sms).to_owned(),
        consent_cell(c, Channel::Push).to_owned(),
        consent_cell(c, Channel::Post).to_owned(),
        c.created_at.to_string(),
        c.updated_at.to_string(),
    ]
}

impl Customers {
    /// Writes every live customer as CSV to `out`; returns how many. Not audited by itself:
    /// callers record the export with [`Customers::record_export`] before the file leaves.
    pub fn write_csv(&self, out: impl Write) -> Result<u64, CrmError> {
        let mut writer = csv::Writer::from_writer(out);
        let failed = |err: csv::Error| StoreError::WriteFailed(format!("CSV export: {err}"));
        writer.write_record(EXPORT_COLUMNS).map_err(failed)?;
        let mut count = 0;
        for item in self.store().scan(CUSTOMERS, b"") {
            let bytes = match item {
                Ok((_, bytes)) => bytes,
                Err(StoreError::Erased) => continue,
                Err(err) => return Err(err.into()),
            };
            let customer: Customer = serde_json::from_slice(&bytes)
                .map_err(|err| StoreError::Decode(format!("customers: {err}")))?;
            if customer.merged_into.is_some() {
                continue;
            }
            let cells = row_of(&customer);
            writer
                .write_record(cells.iter().map(|c| safe_cell(c).into_owned()))
                .map_err(failed)?;
            count += 1;
        }
        writer.flush().map_err(|err| failed(err.into()))?;
        Ok(count)
    }

    /// Records an export in the audit trail (fail closed: no entry, no file).
    pub async fn record_export(&self, actor: Actor, count: u64, to: &str) -> Result<(), CrmError> {
        self.record(
            Event::new(Action::CustomersExported)
                .by(actor)
                .fields(EXPORT_COLUMNS.iter().copied())
                .reason(format!("{count} customers to {to}")),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_starters_are_quoted() {
        assert_eq!(safe_cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(safe_cell("+442079460018"), "'+442079460018");
        assert_eq!(safe_cell("-1"), "'-1");
        assert_eq!(safe_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(safe_cell("Ada"), "Ada");
    }

    #[test]
    fn export_columns_import_back() {
        for column in EXPORT_COLUMNS {
            assert!(
                super::super::import::COLUMNS.contains(column),
                "{column} is not an import column"
            );
        }
    }
}
