//! Customers: one profile per person across the register, the web shop and the loyalty
//! programme, and the rules that keep what goes into a profile clean (normalised emails and
//! phones, bounded lengths, no control characters).

use std::fmt;

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use super::Id;

/// Longest name, tag or address line kept (characters).
pub const MAX_TEXT: usize = 200;
/// Longest note (characters).
pub const MAX_NOTE: usize = 4000;
/// Most emails, phones, addresses, loyalty ids or external ids on one profile.
pub const MAX_LIST: usize = 20;

/// A customer profile. Every personal field is sealed under the customer's own key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub id: Id,
    pub given_name: String,
    pub family_name: String,
    /// Normalised: trimmed, lower-case.
    pub emails: Vec<String>,
    /// E.164 (`+447700900123`).
    pub phones: Vec<String>,
    pub addresses: Vec<Address>,
    pub birthday: Option<Date>,
    pub loyalty_ids: Vec<String>,
    pub external_ids: Vec<ExternalId>,
    pub tags: Vec<String>,
    pub preferred_channel: Option<Channel>,
    pub preferred_store: Option<Id>,
    pub consents: Vec<Consent>,
    /// Protected from retention erasure.
    pub legal_hold: bool,
    /// Set when this profile was merged into another (it then only redirects there).
    pub merged_into: Option<Id>,
    /// Profiles merged into this one.
    pub merged_from: Vec<Id>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Last purchase, visit or profile change: what retention looks at.
    pub last_activity_at: Timestamp,
}

impl Customer {
    /// "Given Family", or a placeholder for a profile with no name yet.
    #[must_use]
    pub fn display_name(&self) -> String {
        let name = format!("{} {}", self.given_name, self.family_name);
        let name = name.trim();
        if name.is_empty() {
            "(no name)".to_owned()
        } else {
            name.to_owned()
        }
    }

    /// Every identity of the profile, strongest first.
    #[must_use]
    pub fn identities(&self) -> Vec<Identity> {
        let mut out: Vec<Identity> = self
            .external_ids
            .iter()
            .map(|e| Identity::External(e.clone()))
            .collect();
        out.extend(self.loyalty_ids.iter().cloned().map(Identity::Loyalty));
        out.extend(self.emails.iter().cloned().map(Identity::Email));
        out.extend(self.phones.iter().cloned().map(Identity::Phone));
        out
    }

    /// The latest consent decision for `channel`, if any.
    #[must_use]
    pub fn consent(&self, channel: Channel) -> Option<&Consent> {
        self.consents
            .iter()
            .filter(|c| c.channel == channel)
            .max_by_key(|c| c.at)
    }

    /// The postcode of the first address, for duplicate detection.
    #[must_use]
    pub fn postcode(&self) -> Option<&str> {
        self.addresses
            .first()
            .map(|a| a.postcode.as_str())
            .filter(|p| !p.is_empty())
    }
}

/// A postal address. Parts left out are empty (API clients send only what they have).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Address {
    pub line1: String,
    pub line2: String,
    pub postcode: String,
    pub city: String,
    pub region: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

/// A customer's id in another system.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExternalId {
    /// `pos`, `web`, `erp`, or a connector name.
    pub source: String,
    pub id: String,
}

/// A contact channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
    Push,
    Post,
}

impl Channel {
    pub const ALL: [Self; 4] = [Self::Email, Self::Sms, Self::Push, Self::Post];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Sms => "sms",
            Self::Push => "push",
            Self::Post => "post",
        }
    }

    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Email => "Email",
            Self::Sms => "SMS",
            Self::Push => "Push",
            Self::Post => "Post",
        }
    }
}

impl std::str::FromStr for Channel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown channel {s:?}: use email, sms, push or post"))
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One consent decision: the history is kept, the latest per channel counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub channel: Channel,
    pub granted: bool,
    pub at: Timestamp,
    /// Where it was given: `counter`, `web`, `pos`, `import`, ...
    pub source: String,
    /// Version of the wording the customer agreed to or withdrew from.
    pub wording_version: String,
}

/// One identity an event or a profile carries, normalised. The order of the variants is the
/// strength of a match.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Identity {
    External(ExternalId),
    Loyalty(String),
    Email(String),
    Phone(String),
}

impl Identity {
    /// Blind-index purpose and normalised value.
    #[must_use]
    pub fn index_input(&self) -> (String, String) {
        match self {
            Self::External(e) => (format!("customer-ext:{}", e.source), e.id.clone()),
            Self::Loyalty(v) => ("customer-loyalty".into(), v.clone()),
            Self::Email(v) => ("customer-email".into(), v.clone()),
            Self::Phone(v) => ("customer-phone".into(), v.clone()),
        }
    }

    /// The kind, for messages and audit field names.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::External(_) => "external_id",
            Self::Loyalty(_) => "loyalty_id",
            Self::Email(_) => "email",
            Self::Phone(_) => "phone",
        }
    }

    /// Strength of a match on this identity: lower is stronger.
    #[must_use]
    pub const fn rank(&self) -> u8 {
        match self {
            Self::External(_) => 0,
            Self::Loyalty(_) => 1,
            Self::Email(_) => 2,
            Self::Phone(_) => 3,
        }
    }
}

/// Why a value was refused, for the field it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Cleans free text: Unicode NFC, control characters refused, spaces collapsed, bounded.
pub fn clean_text(field: &str, value: &str, max: usize) -> Result<String, FieldError> {
    let value: String = value.nfc().collect();
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        return Err(field_error(field, "contains control characters"));
    }
    let cleaned = value.split_whitespace().collect::<Vec<_>>().join(" ");
    if cleaned.chars().count() > max {
        return Err(field_error(
            field,
            &format!("is longer than {max} characters"),
        ));
    }
    Ok(cleaned)
}

/// Cleans a name: as [`clean_text`], and no markup characters.
pub fn clean_name(field: &str, value: &str) -> Result<String, FieldError> {
    let cleaned = clean_text(field, value, MAX_TEXT)?;
    if cleaned.contains(['<', '>', '{', '}', '\\']) {
        return Err(field_error(field, "must not contain < > { } or \\"));
    }
    Ok(cleaned)
}

/// Normalises an email: trimmed, lower-case, one `@`, a dot in the domain, no spaces.
pub fn normalise_email(field: &str, value: &str) -> Result<String, FieldError> {
    let email = value.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.matches('@').count() == 1
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local.len() <= 64
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains("..")
                && domain
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || c == '.')
        });
    if valid {
        Ok(email)
    } else {
        Err(field_error(
            field,
            "is not an email address (expected name@example.com)",
        ))
    }
}

/// Patterns the phone library keeps compiled. Its own default (100, shared by every country)
/// is smaller than what parsing and validating numbers of a few countries walks through (a
/// dozen number-type patterns per country, more for shared calling codes such as +1), so it
/// evicted and recompiled patterns on most calls: a few milliseconds each, the slow tail of
/// phone searches and of import validation. Only patterns in use are compiled; a few hundred
/// cost a few MB.
const PHONE_PATTERNS_KEPT: usize = 4096;

/// Raises the phone library's pattern cache to [`PHONE_PATTERNS_KEPT`], once per process.
fn widen_phone_pattern_cache() {
    static WIDENED: std::sync::Once = std::sync::Once::new();
    WIDENED.call_once(|| {
        let cache = phonenumber::metadata::DATABASE.cache();
        cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .set_capacity(PHONE_PATTERNS_KEPT);
    });
}

/// Normalises a phone number to E.164, reading national numbers (a leading 0) as numbers of
/// `default_country` (ISO 3166-1 alpha-2).
pub fn normalise_phone(
    field: &str,
    value: &str,
    default_country: &str,
) -> Result<String, FieldError> {
    let typed = value.trim();
    if typed.is_empty() || typed.len() > 40 {
        return Err(field_error(field, "is not a phone number"));
    }
    // An international number is read without the default country: given one, the phone
    // library strips that country's national prefix from it (US `1`: +49 151... became
    // +49 51...).
    widen_phone_pattern_cache();
    let country = if typed.starts_with('+') {
        None
    } else {
        default_country.parse::<phonenumber::country::Id>().ok()
    };
    let number = phonenumber::parse(country, typed).map_err(|_| {
        field_error(
            field,
            "is not a phone number (use the international form, +44 20 7946 0018)",
        )
    })?;
    if !phonenumber::is_valid(&number) {
        return Err(field_error(
            field,
            "is not a valid phone number for its country",
        ));
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// Normalises a loyalty or external id: trimmed, no spaces inside, printable ASCII.
pub fn normalise_code(field: &str, value: &str) -> Result<String, FieldError> {
    let code: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    if code.is_empty() || code.len() > 64 || !code.chars().all(|c| c.is_ascii_graphic()) {
        return Err(field_error(
            field,
            "must be 1 to 64 letters, digits or punctuation",
        ));
    }
    Ok(code.to_uppercase())
}

/// A birthday: a real date, not in the future, and not more than 130 years ago.
pub fn check_birthday(field: &str, date: Date, today: Date) -> Result<Date, FieldError> {
    if date > today {
        return Err(field_error(field, "is in the future"));
    }
    if today.year() - date.year() > 130 {
        return Err(field_error(field, "is more than 130 years ago"));
    }
    Ok(date)
}

fn field_error(field: &str, message: &str) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.to_owned(),
    }
}

/// Folds a name for search: lower-case, accents removed, letters and digits only, split into
/// words.
#[must_use]
pub fn search_tokens(text: &str) -> Vec<String> {
    let folded: String = text
        .nfkd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    folded.split_whitespace().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_in_common_forms_become_one_e164_number() {
        for typed in [
            "020 7946 0018",
            "+44 20 7946 0018",
            "0044 20 7946 0018",
            "(020) 7946-0018",
        ] {
            assert_eq!(
                normalise_phone("phone", typed, "GB").unwrap(),
                "+442079460018",
                "{typed}"
            );
        }
        // An international number keeps every digit whatever the default country (the US
        // national prefix `1` once ate the first digit of German mobiles).
        for country in ["US", "GB", "DE"] {
            assert_eq!(
                normalise_phone("phone", "+49 151 75555190", country).unwrap(),
                "+4915175555190",
                "{country}"
            );
        }
        assert!(normalise_phone("phone", "12", "GB").is_err());
        assert!(normalise_phone("phone", "call me", "GB").is_err());
    }

    #[test]
    fn emails_are_checked_and_lower_cased() {
        assert_eq!(
            normalise_email("email", " Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in [
            "ada",
            "ada@",
            "@example.com",
            "a b@example.com",
            "ada@example",
            "a@@b.com",
        ] {
            assert!(normalise_email("email", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_refuse_markup_and_control_characters() {
        assert_eq!(
            clean_name("given_name", "  Zoë   Anne ").unwrap(),
            "Zoë Anne"
        );
        assert!(clean_name("given_name", "<script>").is_err());
        assert!(clean_name("given_name", "a\u{7}b").is_err());
        assert!(clean_name("given_name", &"x".repeat(MAX_TEXT + 1)).is_err());
    }

    #[test]
    fn search_tokens_fold_case_and_accents() {
        assert_eq!(
            search_tokens("Zoë O'Brien-Núñez"),
            ["zoe", "o", "brien", "nunez"]
        );
    }
}
