//! ARTS/NRF `POSLog` XML (2.x and 6.x) to [`SaleTransaction`]s.
//!
//! A file is read whole or refused whole: [`parse`] returns every transaction or the first
//! problem, with the line and the element. Elements of the ARTS namespace (unprefixed or
//! `poslog:`) are understood; vendor elements (NCR's `acs:` and others) are tolerated, their
//! leaf values kept as extensions, and a vendor loyalty id (`acs:LoyaltyID`) is read as the
//! customer's loyalty id. Every text kept goes through card-number masking first.

use jiff::civil::{Date, DateTime};
use quick_xml::events::Event;

use crate::domain::card::mask_card_numbers;
use crate::domain::sale::{
    CustomerRefs, SaleLine, SaleTransaction, Tender, TransactionKey, TransactionKind, minor_digits,
    parse_decimal,
};

/// Most vendor extension values kept per transaction.
const MAX_EXTENSIONS: usize = 100;

/// Why a file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, <{element}>: {reason}")]
pub struct PoslogError {
    pub line: usize,
    pub element: String,
    pub reason: String,
}

/// One XML element, with where it started.
#[derive(Debug, Default)]
struct Node {
    /// `LineItem`, or `acs:LoyaltyID` for vendor elements.
    name: String,
    vendor: bool,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Node>,
    line: usize,
}

impl Node {
    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| !c.vendor && c.name == name)
    }

    fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children
            .iter()
            .filter(move |c| !c.vendor && c.name == name)
    }

    fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name)
            .map(|c| c.text.trim())
            .filter(|t| !t.is_empty())
    }

    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name || k.rsplit(':').next() == Some(name))
            .map(|(_, v)| v.as_str())
    }

    fn error(&self, reason: impl Into<String>) -> PoslogError {
        PoslogError {
            line: self.line,
            element: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// Depth-first search for a descendant (ARTS or vendor) with this local name.
    fn find_local(&self, local: &str) -> Option<&Node> {
        for c in &self.children {
            if c.name.rsplit(':').next() == Some(local) {
                return Some(c);
            }
            if let Some(found) = c.find_local(local) {
                return Some(found);
            }
        }
        None
    }
}

/// Parses a whole `POSLog` document. `default_currency` applies to transactions without a
/// `CurrencyCode`.
pub fn parse(bytes: &[u8], default_currency: &str) -> Result<Vec<SaleTransaction>, PoslogError> {
    let text = std::str::from_utf8(bytes).map_err(|e| PoslogError {
        line: line_of(bytes, e.valid_up_to()),
        element: "?".into(),
        reason: "the file is not UTF-8 text".into(),
    })?;
    let root = tree(text)?;
    if root.name != "POSLog" && root.name != "Transaction" {
        return Err(root.error("the document is not a POSLog (expected <POSLog>)"));
    }
    let transactions: Vec<&Node> = if root.name == "Transaction" {
        vec![&root]
    } else {
        root.children_named("Transaction").collect()
    };
    if transactions.is_empty() {
        return Err(root.error("no <Transaction> in the file"));
    }
    transactions
        .into_iter()
        .map(|t| transaction(t, default_currency))
        .collect()
}

/// Builds the element tree; a file cut short (still being written) is an error.
fn tree(text: &str) -> Result<Node, PoslogError> {
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let bytes = text.as_bytes();
    let mut lines = Lines::default();
    loop {
        let at = usize::try_from(reader.buffer_position()).unwrap_or(0);
        let event = reader.read_event().map_err(|e| {
            let reached = usize::try_from(reader.buffer_position()).unwrap_or(0);
            PoslogError {
                line: line_of(
                    bytes,
                    usize::try_from(reader.error_position()).unwrap_or(at),
                ),
                element: stack.last().map_or("?".into(), |n| n.name.clone()),
                reason: if reached >= bytes.len() {
                    format!(
                        "the file ends in the middle of a tag (cut short, or still being \
                         written): {e}"
                    )
                } else {
                    format!("malformed XML: {e}")
                },
            }
        })?;
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(PoslogError {
                    line: line_of(bytes, at),
                    element: "?".into(),
                    reason: "content after the end of the document".into(),
                });
            }
            Event::Start(e) => stack.push(node(&e, lines.at(bytes, at))?),
            Event::Empty(e) => {
                let n = node(&e, lines.at(bytes, at))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(n),
                    None => root = Some(n),
                }
            }
            Event::Text(t) => {
                if let Some(current) = stack.last_mut() {
                    let value = t.unescape().map_err(|e| PoslogError {
                        line: line_of(bytes, at),
                        element: current.name.clone(),
                        reason: format!("bad text: {e}"),
                    })?;
                    current.text.push_str(&value);
                }
            }
            Event::CData(t) => {
                if let Some(current) = stack.last_mut() {
                    current.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::End(_) => {
                let done = stack.pop().ok_or_else(|| PoslogError {
                    line: line_of(bytes, at),
                    element: "?".into(),
                    reason: "closing tag without an opening one".into(),
                })?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(PoslogError {
            line: line_of(bytes, bytes.len()),
            element: open.name.clone(),
            reason: format!(
                "the file ends before </{}> (cut short, or still being written)",
                open.name
            ),
        });
    }
    root.ok_or_else(|| PoslogError {
        line: 1,
        element: "?".into(),
        reason: "the file is empty".into(),
    })
}

fn node(e: &quick_xml::events::BytesStart<'_>, line: usize) -> Result<Node, PoslogError> {
    let raw = String::from_utf8_lossy(e.name().as_ref()).into_owned();
    let (prefix, local) = match raw.split_once(':') {
        Some((p, l)) => (Some(p.to_owned()), l.to_owned()),
        None => (None, raw.clone()),
    };
    let vendor = prefix.as_deref().is_some_and(|p| p != "poslog");
    let mut attrs = Vec::new();
    for attr in e.attributes() {
        let attr = attr.map_err(|err| PoslogError {
            line,
            element: raw.clone(),
            reason: format!("malformed attribute: {err}"),
        })?;
        let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
        let value = attr
            .unescape_value()
            .map_err(|err| PoslogError {
                line,
                element: raw.clone(),
                reason: format!("malformed attribute value: {err}"),
            })?
            .into_owned();
        attrs.push((key, value));
    }
    Ok(Node {
        name: if vendor { raw } else { local },
        vendor,
        attrs,
        text: String::new(),
        children: Vec::new(),
        line,
    })
}

/// Line numbers of increasing offsets, counted once: elements are met in document order, so
/// each newline is counted once however large the file (counting from the start for every
/// element made big files quadratic).
#[derive(Debug)]
struct Lines {
    offset: usize,
    line: usize,
}

impl Default for Lines {
    fn default() -> Self {
        Self { offset: 0, line: 1 }
    }
}

impl Lines {
    fn at(&mut self, bytes: &[u8], offset: usize) -> usize {
        let offset = offset.min(bytes.len());
        if offset < self.offset {
            return line_of(bytes, offset);
        }
        // A slice with n newlines splits into n + 1 pieces.
        self.line += bytes[self.offset..offset].split(|b| *b == b'\n').count() - 1;
        self.offset = offset;
        self.line
    }
}

fn line_of(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset.min(bytes.len())]
        .split(|b| *b == b'\n')
        .count()
}

fn required<'a>(t: &'a Node, name: &str) -> Result<&'a str, PoslogError> {
    t.text_of(name)
        .ok_or_else(|| t.error(format!("<{name}> is missing")))
}

fn transaction(t: &Node, default_currency: &str) -> Result<SaleTransaction, PoslogError> {
    let store = required(t, "RetailStoreID")?.to_owned();
    let register = required(t, "WorkstationID")?.to_owned();
    let sequence = required(t, "SequenceNumber")?
        .parse::<u64>()
        .map_err(|_| t.error("<SequenceNumber> is not a whole number"))?;
    let business_day = required(t, "BusinessDayDate")?
        .parse::<Date>()
        .map_err(|_| t.error("<BusinessDayDate> is not a date (YYYY-MM-DD)"))?;
    let currency = t
        .text_of("CurrencyCode")
        .unwrap_or(default_currency)
        .to_ascii_uppercase();
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(t.error(format!("currency {currency:?} is not an ISO 4217 code")));
    }
    let digits = minor_digits(&currency);
    let mut sale = SaleTransaction {
        key: TransactionKey {
            store,
            register,
            business_day,
            sequence,
        },
        kind: TransactionKind::Control,
        currency,
        operator: t
            .text_of("OperatorID")
            .map(|o| mask_card_numbers(o).into_owned()),
        started_at: t.text_of("BeginDateTime").and_then(civil_time),
        ended_at: t.text_of("EndDateTime").and_then(civil_time),
        lines: Vec::new(),
        tenders: Vec::new(),
        total: None,
        customer: CustomerRefs::default(),
        extensions: Vec::new(),
    };
    let cancelled = t.attr("CancelFlag") == Some("true");
    if let Some(retail) = t.child("RetailTransaction") {
        retail_transaction(retail, digits, &mut sale)?;
        let status = retail.attr("TransactionStatus").unwrap_or_default();
        if cancelled || matches!(status, "Voided" | "Cancelled" | "Canceled") {
            sale.kind = TransactionKind::Void;
        }
    } else if [
        "ControlTransaction",
        "TenderControlTransaction",
        "FunctionLog",
        "InventoryControlTransaction",
    ]
    .iter()
    .any(|name| t.child(name).is_some())
    {
        sale.kind = TransactionKind::Control;
    } else {
        let found = t
            .children
            .iter()
            .filter(|c| !c.vendor)
            .map(|c| c.name.as_str())
            .find(|n| n.ends_with("Transaction"));
        return Err(t.error(match found {
            Some(name) => format!("unknown transaction type <{name}>"),
            None => "no transaction body (expected <RetailTransaction> or a control record)".into(),
        }));
    }
    vendor_values(t, &mut sale.extensions);
    if let Some(loyalty) = t
        .find_local("LoyaltyID")
        .or_else(|| t.find_local("LoyaltyAccountID"))
    {
        let id = loyalty.text.trim();
        if !id.is_empty() && sale.customer.loyalty_id.is_none() {
            sale.customer.loyalty_id = Some(id.to_owned());
        }
    }
    Ok(sale)
}

fn retail_transaction(
    retail: &Node,
    digits: u32,
    sale: &mut SaleTransaction,
) -> Result<(), PoslogError> {
    let money = |n: &Node, name: &str| -> Result<i64, PoslogError> {
        n.text_of(name).map_or(Ok(0), |v| {
            parse_decimal(v, digits).map_err(|e| n.error(format!("<{name}> {e}")))
        })
    };
    for item in retail.children_named("LineItem") {
        let voided = item.attr("VoidFlag") == Some("true");
        let line_no = item
            .text_of("SequenceNumber")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if let Some((body, returned)) = item
            .child("Sale")
            .map(|b| (b, false))
            .or_else(|| item.child("Return").map(|b| (b, true)))
        {
            sale.lines
                .push(item_line(body, returned, voided, line_no, digits)?);
        } else if let Some(tender) = item.child("Tender") {
            if voided {
                continue;
            }
            let refund = matches!(tender.attr("TypeCode"), Some("Refund"));
            let amount = money(tender, "Amount")?;
            let change = tender
                .child("TenderChange")
                .map_or(Ok(0), |c| money(c, "Amount"))?;
            let card_masked = tender
                .find_local("PrimaryAccountNumber")
                .map(|n| mask_card_numbers(n.text.trim()).into_owned())
                .filter(|n| !n.is_empty());
            sale.tenders.push(Tender {
                kind: tender.attr("TenderType").unwrap_or("Other").to_owned(),
                amount: if refund { -amount.abs() } else { amount },
                change,
                card_masked,
            });
        } else if let Some(customer) = item.child("Customer") {
            customer_refs(customer, &mut sale.customer);
        }
    }
    if let Some(customer) = retail.child("Customer") {
        customer_refs(customer, &mut sale.customer);
    }
    for total in retail.children_named("Total") {
        if total.attr("TotalType") == Some("TransactionGrandAmount") {
            sale.total = Some(
                parse_decimal(total.text.trim(), digits)
                    .map_err(|e| total.error(format!("grand total {e}")))?,
            );
        }
    }
    let items: Vec<&SaleLine> = sale.lines.iter().filter(|l| !l.voided).collect();
    sale.kind = if !items.is_empty() && items.iter().all(|l| l.returned) {
        TransactionKind::Return
    } else {
        TransactionKind::Sale
    };
    if let (Some(total), false) = (sale.total, sale.tenders.is_empty()) {
        let paid: i64 = sale.tenders.iter().map(|t| t.amount - t.change).sum();
        if paid.abs() != total.abs() {
            return Err(retail.error(format!(
                "the tenders ({}) do not add up to the grand total ({})",
                format_minor(paid, digits),
                format_minor(total, digits)
            )));
        }
    }
    Ok(())
}

/// One `<Sale>` or `<Return>` item line.
fn item_line(
    body: &Node,
    returned: bool,
    voided: bool,
    line_no: u32,
    digits: u32,
) -> Result<SaleLine, PoslogError> {
    let money = |n: &Node, name: &str| -> Result<i64, PoslogError> {
        n.text_of(name).map_or(Ok(0), |v| {
            parse_decimal(v, digits).map_err(|e| n.error(format!("<{name}> {e}")))
        })
    };
    let identity = body.child("POSIdentity");
    let pos_id = identity.and_then(|p| p.text_of("POSItemID"));
    let sku = body
        .text_of("ItemID")
        .or(pos_id)
        .ok_or_else(|| body.error("no <ItemID> or <POSIdentity>"))?
        .to_owned();
    let gtin = identity
        .filter(|p| matches!(p.attr("POSIDType"), Some("GTIN" | "EAN" | "UPC")))
        .and_then(|p| p.text_of("POSItemID"))
        .map(str::to_owned);
    let quantity_milli = match body.text_of("Quantity") {
        Some(q) => parse_decimal(q, 3).map_err(|e| body.error(format!("<Quantity> {e}")))?,
        None => 1000,
    };
    if quantity_milli < 0 && !returned {
        return Err(body.error("negative <Quantity> in a sale line (use a <Return> line)"));
    }
    let unit_price = match body.text_of("ActualSalesUnitPrice") {
        Some(_) => money(body, "ActualSalesUnitPrice")?,
        None => money(body, "RegularSalesUnitPrice")?,
    };
    let mut discount = money(body, "ExtendedDiscountAmount")?.abs();
    let mut discount_codes = Vec::new();
    for modifier in body.children_named("RetailPriceModifier") {
        discount += money(modifier, "Amount")?.abs();
        if let Some(code) = modifier
            .text_of("PromotionID")
            .or_else(|| modifier.text_of("ReasonCode"))
        {
            discount_codes.push(code.to_owned());
        }
    }
    Ok(SaleLine {
        line_no,
        sku,
        gtin,
        description: mask_card_numbers(body.text_of("Description").unwrap_or_default())
            .into_owned(),
        quantity_milli: quantity_milli.abs(),
        unit_price,
        extended: money(body, "ExtendedAmount")?.abs(),
        discount,
        discount_codes,
        returned,
        voided,
    })
}

fn customer_refs(customer: &Node, refs: &mut CustomerRefs) {
    if let Some(id) = customer.text_of("CustomerID") {
        refs.external_id.get_or_insert_with(|| id.to_owned());
    }
    if let Some(email) = customer
        .find_local("EMailAddress")
        .or_else(|| customer.find_local("EMail"))
        .map(|n| n.text.trim())
        .filter(|e| !e.is_empty())
    {
        refs.email.get_or_insert_with(|| email.to_owned());
    }
    if let Some(loyalty) = customer
        .find_local("LoyaltyAccountID")
        .or_else(|| customer.find_local("LoyaltyID"))
        .map(|n| n.text.trim())
        .filter(|e| !e.is_empty())
    {
        refs.loyalty_id.get_or_insert_with(|| loyalty.to_owned());
    }
}

/// Leaf values of vendor elements anywhere in the transaction, masked.
fn vendor_values(n: &Node, out: &mut Vec<(String, String)>) {
    for c in &n.children {
        if out.len() >= MAX_EXTENSIONS {
            return;
        }
        if c.vendor && c.children.is_empty() && !c.text.trim().is_empty() {
            out.push((
                c.name.clone(),
                mask_card_numbers(c.text.trim()).into_owned(),
            ));
        }
        vendor_values(c, out);
    }
}

fn civil_time(text: &str) -> Option<DateTime> {
    text.parse::<DateTime>().ok().or_else(|| {
        // With an offset or a zone: keep the wall-clock time the register printed.
        text.get(..19).and_then(|t| t.parse::<DateTime>().ok())
    })
}

fn format_minor(value: i64, digits: u32) -> String {
    if digits == 0 {
        return value.to_string();
    }
    let scale = 10i64.pow(digits);
    let sign = if value < 0 { "-" } else { "" };
    format!(
        "{sign}{}.{:0width$}",
        value.abs() / scale,
        value.abs() % scale,
        width = digits as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<POSLog xmlns="http://www.nrf-arts.org/IXRetail/namespace/" xmlns:acme="urn:acme:pos">
  <Transaction>
    <RetailStoreID>S001</RetailStoreID>
    <WorkstationID>3</WorkstationID>
    <SequenceNumber>1042</SequenceNumber>
    <BusinessDayDate>2026-11-27</BusinessDayDate>
    <BeginDateTime>2026-11-27T10:15:00</BeginDateTime>
    <EndDateTime>2026-11-27T10:16:30+01:00</EndDateTime>
    <OperatorID>77</OperatorID>
    <CurrencyCode>EUR</CurrencyCode>
    <RetailTransaction Version="2.1">
      <LineItem>
        <SequenceNumber>1</SequenceNumber>
        <Sale ItemType="Stock">
          <POSIdentity POSIDType="GTIN"><POSItemID>04006381333931</POSItemID></POSIdentity>
          <ItemID>SKU-RED-M</ItemID>
          <Description>Red scarf &amp; gloves</Description>
          <RegularSalesUnitPrice>49.90</RegularSalesUnitPrice>
          <ExtendedAmount>99.80</ExtendedAmount>
          <Quantity>2</Quantity>
          <RetailPriceModifier><Amount>10.00</Amount><PromotionID>WINTER10</PromotionID></RetailPriceModifier>
        </Sale>
      </LineItem>
      <LineItem>
        <SequenceNumber>2</SequenceNumber>
        <Sale><ItemID>APPLES</ItemID><Description>Apples</Description>
          <RegularSalesUnitPrice>2.99</RegularSalesUnitPrice><ExtendedAmount>1.26</ExtendedAmount>
          <Quantity>0.42</Quantity></Sale>
      </LineItem>
      <LineItem VoidFlag="true">
        <SequenceNumber>3</SequenceNumber>
        <Sale><ItemID>SKU-BLUE</ItemID><ExtendedAmount>5.00</ExtendedAmount></Sale>
      </LineItem>
      <LineItem>
        <SequenceNumber>4</SequenceNumber>
        <Tender TenderType="CreditDebit" TypeCode="Sale"><Amount>91.06</Amount>
          <CreditDebit><PrimaryAccountNumber>4111 1111 1111 1111</PrimaryAccountNumber></CreditDebit>
        </Tender>
      </LineItem>
      <LineItem><SequenceNumber>5</SequenceNumber>
        <Customer><CustomerID>WEB-881</CustomerID><EMailAddress>ada@example.com</EMailAddress></Customer>
      </LineItem>
      <Total TotalType="TransactionGrandAmount">91.06</Total>
    </RetailTransaction>
    <acme:Till><acme:Note>card 5555555555554444 used</acme:Note><acme:LoyaltyID>LOY-1</acme:LoyaltyID></acme:Till>
  </Transaction>
  <Transaction>
    <RetailStoreID>S001</RetailStoreID><WorkstationID>3</WorkstationID>
    <SequenceNumber>1041</SequenceNumber><BusinessDayDate>2026-11-27</BusinessDayDate>
    <ControlTransaction><OperatorSignOn/></ControlTransaction>
  </Transaction>
</POSLog>"#;

    #[test]
    fn a_sale_with_weighed_item_discount_void_card_and_customer() {
        let txs = parse(SALE.as_bytes(), "USD").unwrap();
        assert_eq!(txs.len(), 2);
        let t = &txs[0];
        assert_eq!(t.key.to_key_string(), "S001/3/2026-11-27/1042");
        assert_eq!(t.kind, TransactionKind::Sale);
        assert_eq!(t.currency, "EUR");
        assert_eq!(t.lines.len(), 3);
        assert_eq!(t.lines[0].gtin.as_deref(), Some("04006381333931"));
        assert_eq!(t.lines[0].description, "Red scarf & gloves");
        assert_eq!(
            (t.lines[0].quantity_milli, t.lines[0].discount),
            (2000, 1000)
        );
        assert_eq!(t.lines[0].discount_codes, ["WINTER10"]);
        assert_eq!((t.lines[1].quantity_milli, t.lines[1].extended), (420, 126));
        assert!(t.lines[2].voided);
        assert_eq!(t.net_amount(), 9980 - 1000 + 126);
        assert_eq!(
            t.tenders[0].card_masked.as_deref(),
            Some("411111******1111")
        );
        assert_eq!(t.total, Some(9106));
        assert_eq!(t.customer.external_id.as_deref(), Some("WEB-881"));
        assert_eq!(t.customer.email.as_deref(), Some("ada@example.com"));
        assert_eq!(t.customer.loyalty_id.as_deref(), Some("LOY-1"));
        assert!(
            t.extensions
                .iter()
                .any(|(k, v)| k == "acme:Note" && v == "card 555555******4444 used")
        );
        assert!(!format!("{t:?}").contains("4111111111111111"));
        assert_eq!(t.ended_at.unwrap().to_string(), "2026-11-27T10:16:30");
        assert_eq!(txs[1].kind, TransactionKind::Control);
    }

    #[test]
    fn returns_and_cancelled_transactions() {
        let ret = SALE
            .replace("<Sale ItemType=\"Stock\">", "<Return>")
            .replacen("</Sale>", "</Return>", 1)
            .replace("<Sale><ItemID>APPLES", "<Return><ItemID>APPLES")
            .replacen(
                "<Quantity>0.42</Quantity></Sale>",
                "<Quantity>0.42</Quantity></Return>",
                1,
            )
            .replace("TypeCode=\"Sale\"", "TypeCode=\"Refund\"");
        let t = &parse(ret.as_bytes(), "USD").unwrap()[0];
        assert_eq!(t.kind, TransactionKind::Return);
        assert!(t.net_amount() < 0);
        let void = SALE.replacen("<Transaction>", "<Transaction CancelFlag=\"true\">", 1);
        let t = &parse(void.as_bytes(), "USD").unwrap()[0];
        assert_eq!((t.kind, t.net_amount()), (TransactionKind::Void, 0));
    }

    #[test]
    fn bad_files_are_refused_with_line_and_element() {
        let cut = &SALE[..SALE.len() / 2];
        let err = parse(cut.as_bytes(), "USD").unwrap_err();
        assert!(err.reason.contains("cut short"), "{err}");

        let wrong_total = SALE.replace(
            "<Total TotalType=\"TransactionGrandAmount\">91.06</Total>",
            "<Total TotalType=\"TransactionGrandAmount\">95.00</Total>",
        );
        let err = parse(wrong_total.as_bytes(), "USD").unwrap_err();
        assert_eq!(err.element, "RetailTransaction");
        assert!(err.reason.contains("do not add up"), "{err}");

        let negative = SALE.replace("<Quantity>2</Quantity>", "<Quantity>-2</Quantity>");
        let err = parse(negative.as_bytes(), "USD").unwrap_err();
        assert!(err.reason.contains("negative"), "{err}");
        assert_eq!(err.line, 14);

        let unknown = SALE.replace(
            "<ControlTransaction><OperatorSignOn/></ControlTransaction>",
            "<LayawayTransaction/>",
        );
        let err = parse(unknown.as_bytes(), "USD").unwrap_err();
        assert!(
            err.reason
                .contains("unknown transaction type <LayawayTransaction>"),
            "{err}"
        );

        let missing = SALE.replacen("<SequenceNumber>1042</SequenceNumber>", "", 1);
        assert!(
            parse(missing.as_bytes(), "USD")
                .unwrap_err()
                .reason
                .contains("<SequenceNumber> is missing")
        );

        assert!(parse(b"<POSLog><Transaction>", "USD").is_err());
        assert!(parse(b"not xml at all", "USD").is_err());
        assert!(parse(b"", "USD").is_err());
        assert!(
            parse(&[0x3c, 0xff, 0xfe], "USD")
                .unwrap_err()
                .reason
                .contains("UTF-8")
        );
        assert!(
            parse(b"<Other/>", "USD")
                .unwrap_err()
                .reason
                .contains("not a POSLog")
        );
    }
}
