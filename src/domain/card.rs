//! Payment card numbers are never stored. Anything that reaches the store from a register, a
//! web shop or a person's typing goes through [`mask_card_numbers`] first: a run of 13 to 19
//! digits (spaces or dashes allowed between them) that passes the Luhn check and starts like a
//! card scheme's number is replaced by its first six and last four digits around asterisks,
//! which PCI DSS allows to be kept. GTIN, loyalty and phone fields are exempt: callers do not
//! pass them here.

use std::borrow::Cow;

/// Replaces every card number in `text` by its masked form; borrows when there is none.
#[must_use]
pub fn mask_card_numbers(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || (i > 0 && bytes[i - 1].is_ascii_digit()) {
            i += 1;
            continue;
        }
        // A run of digits, with single spaces or dashes between groups.
        let mut digits: Vec<u8> = Vec::with_capacity(19);
        let mut end = i;
        let mut j = i;
        while j < bytes.len() {
            let b = bytes[j];
            if b.is_ascii_digit() {
                digits.push(b - b'0');
                j += 1;
                end = j;
            } else if (b == b' ' || b == b'-')
                && j + 1 < bytes.len()
                && bytes[j + 1].is_ascii_digit()
                && !digits.is_empty()
            {
                j += 1;
            } else {
                break;
            }
            if digits.len() > 19 {
                break;
            }
        }
        if let Some((start, stop)) = find_card(&digits) {
            // Map digit positions back to byte offsets inside text[i..end].
            let offsets: Vec<usize> = (i..end).filter(|&k| bytes[k].is_ascii_digit()).collect();
            let from = offsets[start];
            let to = offsets[stop - 1] + 1;
            let buf = out.get_or_insert_with(|| String::with_capacity(text.len()));
            buf.push_str(&text[copied..from]);
            buf.push_str(&masked(&digits[start..stop]));
            copied = to;
            i = to;
        } else {
            i = end.max(i + 1);
        }
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut buf) => {
            buf.push_str(&text[copied..]);
            Cow::Owned(buf)
        }
    }
}

/// Elements whose text is exempt in [`mask_card_numbers_in_xml`]: article numbers, loyalty
/// cards and phones, by a part of their local name.
const EXEMPT_ELEMENTS: &[&str] = &[
    "GTIN",
    "UPC",
    "EAN",
    "Barcode",
    "ItemID",
    "POSIdentity",
    "Loyalty",
    "Phone",
    "Telephone",
];

/// Masks card numbers in an XML document kept as it arrived (a `POSLog` file held by a
/// connector): in text, attribute values, comments and CDATA, except the text of article
/// number, loyalty and phone elements. Tags and structure are kept byte for byte, so a masked
/// file parses to the same transactions (whose card fields the parser masks anyway). Borrows
/// when there is nothing to mask.
#[must_use]
pub fn mask_card_numbers_in_xml(bytes: &[u8]) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut open: Vec<&[u8]> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let (end, exempt_text) = if bytes[i] == b'<' {
            let end = markup_end(bytes, i);
            let tag = &bytes[i + 1..end.saturating_sub(1).max(i + 1)];
            if let Some(closing) = tag.strip_prefix(b"/") {
                let name = element_name(closing);
                if let Some(at) = open.iter().rposition(|n| *n == name) {
                    open.truncate(at);
                }
            } else if !tag.starts_with(b"?") && !tag.starts_with(b"!") && !tag.ends_with(b"/") {
                open.push(element_name(tag));
            }
            let cdata = tag.starts_with(b"![CDATA[");
            (end, cdata && exempt(open.last().copied()))
        } else {
            let end = bytes[i..]
                .iter()
                .position(|&b| b == b'<')
                .map_or(bytes.len(), |at| i + at);
            (end, exempt(open.last().copied()))
        };
        let piece = &bytes[i..end];
        if !exempt_text {
            let text = String::from_utf8_lossy(piece);
            if let Cow::Owned(masked) = mask_card_numbers(&text) {
                let buf = out.get_or_insert_with(|| bytes[..i].to_vec());
                buf.extend_from_slice(masked.as_bytes());
                i = end;
                continue;
            }
        }
        if let Some(buf) = out.as_mut() {
            buf.extend_from_slice(piece);
        }
        i = end;
    }
    out.map_or(Cow::Borrowed(bytes), Cow::Owned)
}

/// One past the end of the markup starting at `start` (`<...>`, a comment or CDATA).
fn markup_end(bytes: &[u8], start: usize) -> usize {
    let rest = &bytes[start..];
    let close: &[u8] = if rest.starts_with(b"<!--") {
        b"-->"
    } else if rest.starts_with(b"<![CDATA[") {
        b"]]>"
    } else {
        b">"
    };
    rest.windows(close.len())
        .position(|w| w == close)
        .map_or(bytes.len(), |at| start + at + close.len())
}

/// The local name of an element from the inside of its tag (`acme:Loyalty a="1"`).
fn element_name(tag: &[u8]) -> &[u8] {
    let name = tag
        .split(|b| b.is_ascii_whitespace() || *b == b'/')
        .next()
        .unwrap_or_default();
    name.rsplit(|b| *b == b':').next().unwrap_or(name)
}

fn exempt(element: Option<&[u8]>) -> bool {
    element.is_some_and(|name| {
        EXEMPT_ELEMENTS
            .iter()
            .any(|part| name.windows(part.len()).any(|w| w == part.as_bytes()))
    })
}

/// Whether `text` holds a card number anywhere.
#[must_use]
pub fn contains_card_number(text: &str) -> bool {
    matches!(mask_card_numbers(text), Cow::Owned(_))
}

/// The first window of `digits` (the whole run, 13–19 long) that is a card number.
fn find_card(digits: &[u8]) -> Option<(usize, usize)> {
    let n = digits.len();
    ((13..=19).contains(&n) && luhn(digits) && scheme_prefix(digits)).then_some((0, n))
}

fn masked(digits: &[u8]) -> String {
    let n = digits.len();
    let mut s = String::with_capacity(n);
    for (k, d) in digits.iter().enumerate() {
        if k < 6 || k >= n - 4 {
            s.push(char::from(b'0' + d));
        } else {
            s.push('*');
        }
    }
    s
}

/// The Luhn (mod 10) check.
#[must_use]
pub fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(k, &d)| {
            let d = u32::from(d);
            if k % 2 == 1 {
                let twice = d * 2;
                if twice > 9 { twice - 9 } else { twice }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether the leading digits belong to a card scheme's issuer range (Visa, Mastercard,
/// American Express, Discover, JCB, Diners Club, `UnionPay`, Maestro).
fn scheme_prefix(digits: &[u8]) -> bool {
    let lead = |n: usize| -> u32 {
        digits[..n]
            .iter()
            .fold(0, |acc, &d| acc * 10 + u32::from(d))
    };
    let (one, two, three, four) = (lead(1), lead(2), lead(3), lead(4));
    one == 4
        || (51..=55).contains(&two)
        || (2221..=2720).contains(&four)
        || two == 34
        || two == 37
        || four == 6011
        || (644..=649).contains(&three)
        || two == 65
        || (3528..=3589).contains(&four)
        || (300..=305).contains(&three)
        || two == 36
        || two == 38
        || two == 39
        || two == 62
        || two == 50
        || (56..=69).contains(&two)
}

#[cfg(test)]
mod tests {

    #[test]
    fn xml_copies_lose_card_numbers_but_keep_article_loyalty_and_phone_numbers() {
        let xml = "<?xml version=\"1.0\"?><POSLog><!-- 4111 1111 1111 1111 -->\
            <Tender Ref=\"5555555555554444\"><PrimaryAccountNumber>4111111111111111\
            </PrimaryAccountNumber></Tender><Sale><ItemID>4111111111111111</ItemID>\
            <acme:LoyaltyCard>4111111111111111</acme:LoyaltyCard><Empty/>\
            <Note><![CDATA[card 4111-1111-1111-1111]]></Note></Sale></POSLog>";
        let masked = mask_card_numbers_in_xml(xml.as_bytes());
        let text = std::str::from_utf8(&masked).unwrap();
        assert!(!text.contains("4111 1111 1111 1111"), "{text}");
        assert!(!text.contains("4111-1111-1111-1111"), "{text}");
        assert!(!text.contains("5555555555554444"), "{text}");
        assert!(
            text.contains("<PrimaryAccountNumber>411111******1111"),
            "{text}"
        );
        assert!(text.contains("<ItemID>4111111111111111</ItemID>"), "{text}");
        assert!(
            text.contains("<acme:LoyaltyCard>4111111111111111<"),
            "{text}"
        );
        assert!(
            text.contains("<Empty/><Note><![CDATA[card 411111******1111]]></Note>"),
            "{text}"
        );
        let clean = b"<POSLog><Sale><ItemID>42</ItemID></Sale></POSLog>";
        assert!(matches!(mask_card_numbers_in_xml(clean), Cow::Borrowed(_)));
    }

    use super::*;

    #[test]
    fn card_numbers_are_masked_wherever_they_appear() {
        assert_eq!(mask_card_numbers("4111111111111111"), "411111******1111");
        assert_eq!(
            mask_card_numbers("paid with 4111 1111 1111 1111 thanks"),
            "paid with 411111******1111 thanks"
        );
        assert_eq!(
            mask_card_numbers("amex 3782-822463-10005"),
            "amex 378282*****0005"
        );
        assert_eq!(
            mask_card_numbers("5555555555554444;x"),
            "555555******4444;x"
        );
    }

    #[test]
    fn other_numbers_are_left_alone() {
        // Luhn-valid but not a card scheme (a GTIN-like run starting with 0).
        assert!(matches!(
            mask_card_numbers("00000000067591"),
            Cow::Borrowed(_)
        ));
        // A Visa-like run failing Luhn.
        assert!(matches!(
            mask_card_numbers("4111111111111112"),
            Cow::Borrowed(_)
        ));
        // Too short, too long.
        assert!(matches!(
            mask_card_numbers("411111111111"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            mask_card_numbers("41111111111111111111"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            mask_card_numbers("order 734277 ref 344665"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn luhn_matches_known_values() {
        let d = |s: &str| s.bytes().map(|b| b - b'0').collect::<Vec<_>>();
        assert!(luhn(&d("79927398713")));
        assert!(!luhn(&d("79927398710")));
    }
}
