//! Second factor: time-based one-time passwords (RFC 6238) and single-use recovery codes.
//!
//! Invariants:
//! - Codes are HMAC-SHA1, 30-second steps, 6 digits: the only combination every authenticator
//!   app supports. A code is accepted one step either side of now (clock drift on phones), and
//!   never for a step at or before the last one used, so a code seen over a shoulder cannot be
//!   replayed.
//! - Secrets are 20 random bytes (RFC 4226's recommended 160 bits), wiped from memory when
//!   dropped and never printed by `Debug`.
//! - Recovery codes are stored only as SHA-256 hashes. Each carries 120 random bits, above the
//!   112 bits OWASP ASVS 2.6.2 asks of lookup secrets stored without a salt, so the stored
//!   hashes cannot be reversed by brute force. A code is removed once used.

use std::fmt;

use data_encoding::{BASE32_NOPAD, HEXLOWER};
use qrcode::render::svg;
use qrcode::types::QrError;
use qrcode::{EcLevel, QrCode};
use ring::{digest, hmac};
use subtle::ConstantTimeEq as _;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::clock::{Random, RandomError};

/// Length of a secret in bytes.
const SECRET_LEN: usize = 20;

/// Seconds per time step.
const STEP_SECONDS: i64 = 30;

/// Digits in a code as authenticator apps show it.
const DIGITS: u32 = 6;

/// Steps accepted either side of the current one.
const DRIFT_STEPS: i64 = 1;

/// Recovery code symbols: lower-case letters and digits without `l`, `o`, `0` and `1`, which
/// are easily mistaken for one another. 32 symbols, so each is exactly 5 random bits.
const RECOVERY_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// Groups of a recovery code, separated by dashes.
const RECOVERY_GROUPS: usize = 6;

/// Symbols per group.
const RECOVERY_GROUP_LEN: usize = 4;

/// Symbols per recovery code: 24 symbols of 5 bits, 120 bits in all.
const RECOVERY_SYMBOLS: usize = RECOVERY_GROUPS * RECOVERY_GROUP_LEN;

/// The shared secret between the server and one authenticator app.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct TotpSecret {
    bytes: [u8; SECRET_LEN],
}

/// A TOTP secret that could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TotpSecretError {
    #[error("TOTP secret is not base32 (RFC 4648, letters A-Z and digits 2-7): {0}")]
    NotBase32(data_encoding::DecodeError),

    #[error("TOTP secret is {bytes} bytes; expected {SECRET_LEN}")]
    WrongLength { bytes: usize },
}

impl TotpSecret {
    /// A new secret of 20 bytes from `random`.
    pub fn generate(random: &dyn Random) -> Result<Self, RandomError> {
        let mut secret = Self {
            bytes: [0; SECRET_LEN],
        };
        random.fill(&mut secret.bytes)?;
        Ok(secret)
    }

    /// Reads a secret written by [`Self::to_base32`]. Lower case, spaces and `=` padding are
    /// accepted, as people copy secrets by hand.
    pub fn from_base32(encoded: &str) -> Result<Self, TotpSecretError> {
        let cleaned: Zeroizing<String> = Zeroizing::new(
            encoded
                .chars()
                .filter(|c| !c.is_whitespace() && *c != '=')
                .map(|c| c.to_ascii_uppercase())
                .collect(),
        );

        let decoded = Zeroizing::new(
            BASE32_NOPAD
                .decode(cleaned.as_bytes())
                .map_err(TotpSecretError::NotBase32)?,
        );

        if decoded.len() != SECRET_LEN {
            return Err(TotpSecretError::WrongLength {
                bytes: decoded.len(),
            });
        }

        let mut secret = Self {
            bytes: [0; SECRET_LEN],
        };
        secret.bytes.copy_from_slice(&decoded);
        Ok(secret)
    }

    /// The secret in RFC 4648 base32 without padding, as authenticator apps expect it.
    #[must_use]
    pub fn to_base32(&self) -> String {
        BASE32_NOPAD.encode(&self.bytes)
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(redacted)")
    }
}

/// The 6-digit code for the time step holding `unix_seconds`.
#[must_use]
pub fn code_at(secret: &TotpSecret, unix_seconds: i64) -> u32 {
    code_for_step(secret, step_of(unix_seconds), DIGITS)
}

/// The time step (RFC 6238 `T`) holding `unix_seconds`.
fn step_of(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(STEP_SECONDS)
}

/// HOTP (RFC 4226) of the step counter with `digits` digits.
fn code_for_step(secret: &TotpSecret, step: i64, digits: u32) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &secret.bytes);
    // The counter is the step as an unsigned 64-bit big-endian number; steps before 1970 are
    // negative and keep their two's complement bit pattern.
    let tag = hmac::sign(&key, &step.to_be_bytes());
    let tag = tag.as_ref();

    // Dynamic truncation: the low 4 bits of the last byte choose where 4 bytes are read.
    // The offset is at most 15, so the 4 bytes lie inside the 20-byte tag.
    let offset = usize::from(tag.last().copied().unwrap_or(0) & 0x0f);
    let binary = tag
        .iter()
        .skip(offset)
        .take(4)
        .fold(0u32, |acc, byte| (acc << 8) | u32::from(*byte))
        & 0x7fff_ffff;

    binary % 10_u32.saturating_pow(digits)
}

/// Checks a code typed by a person at `now_unix`, allowing one step of clock drift either way.
/// Returns the step that matched, to be stored as `last_used_step`; codes for that step and
/// earlier ones are refused from then on. Spaces in the input are ignored; anything but 6
/// digits is refused.
#[must_use]
pub fn verify(
    secret: &TotpSecret,
    code: &str,
    now_unix: i64,
    last_used_step: Option<i64>,
) -> Option<i64> {
    let typed: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if typed.len() != DIGITS as usize || !typed.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }

    let now_step = step_of(now_unix);
    let mut matched = None;
    for step in now_step.saturating_sub(DRIFT_STEPS)..=now_step.saturating_add(DRIFT_STEPS) {
        if last_used_step.is_some_and(|last| step <= last) {
            continue;
        }

        let expected = format!(
            "{:0width$}",
            code_for_step(secret, step, DIGITS),
            width = DIGITS as usize
        );
        let equal = bool::from(expected.as_bytes().ct_eq(typed.as_bytes()));
        if equal && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// The `otpauth://` URI an authenticator app reads from the enrolment QR code (Key URI
/// format). It holds the secret: show it to the account holder only, and never log it.
#[must_use]
pub fn provisioning_uri(secret: &TotpSecret, issuer: &str, account: &str) -> String {
    let issuer = percent_encode(issuer);
    let account = percent_encode(account);
    let secret = Zeroizing::new(secret.to_base32());
    format!(
        "otpauth://totp/{issuer}:{account}?secret={}&issuer={issuer}\
         &algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        secret.as_str()
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so a `:`, `?`, `&`, `#` or
/// space in an issuer or login cannot change how the URI is read.
fn percent_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";

    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    out
}

/// The enrolment URI could not be drawn as a QR code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the enrolment link cannot be drawn as a QR code: {0}; use a shorter issuer or login")]
pub struct QrCodeError(#[from] QrError);

/// Draws `uri` as a QR code in SVG, black on white, with the quiet zone apps need to find it.
/// The SVG is plain shapes (no script, no links, no XML declaration) with a `viewBox`, so it
/// can be inlined in a page or served as an image and sized with CSS.
pub fn qr_svg(uri: &str) -> Result<String, QrCodeError> {
    const XML_DECLARATION: &str = r#"<?xml version="1.0" standalone="yes"?>"#;

    let code = QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::M)?;
    let mut svg = code
        .render::<svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();

    if svg.starts_with(XML_DECLARATION) {
        svg.drain(..XML_DECLARATION.len());
    }
    Ok(svg)
}

/// `n` new recovery codes such as `abcd-efgh-jkmn-pqrs-tuvw-xyz2`, to show the account holder
/// once. Store only their [`hash_recovery_code`].
pub fn generate_recovery_codes(random: &dyn Random, n: usize) -> Result<Vec<String>, RandomError> {
    (0..n).map(|_| recovery_code(random)).collect()
}

fn recovery_code(random: &dyn Random) -> Result<String, RandomError> {
    let mut bytes = Zeroizing::new([0u8; RECOVERY_SYMBOLS]);
    random.fill(bytes.as_mut())?;

    let mut code = String::with_capacity(RECOVERY_SYMBOLS + RECOVERY_GROUPS);
    for (index, byte) in bytes.iter().enumerate() {
        if index > 0 && index % RECOVERY_GROUP_LEN == 0 {
            code.push('-');
        }
        // 256 is a multiple of 32, so the low 5 bits are uniform.
        code.push(char::from(RECOVERY_ALPHABET[usize::from(byte & 0x1f)]));
    }
    Ok(code)
}

/// The stored form of a recovery code: SHA-256, in lower-case hex, of the code in lower case
/// without spaces or dashes, so it may be typed in any case and grouping.
#[must_use]
pub fn hash_recovery_code(code: &str) -> String {
    let normalised = Zeroizing::new(normalise_recovery_code(code));
    HEXLOWER.encode(digest::digest(&digest::SHA256, normalised.as_bytes()).as_ref())
}

fn normalise_recovery_code(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Accepts a recovery code once: when `code` matches one of `hashes`, that hash is removed
/// (store the list again) and the answer is true.
pub fn use_recovery_code(hashes: &mut Vec<String>, code: &str) -> bool {
    if normalise_recovery_code(code).is_empty() {
        return false;
    }
    let candidate = hash_recovery_code(code);

    let mut found = None;
    for (index, stored) in hashes.iter().enumerate() {
        let equal = bool::from(stored.as_bytes().ct_eq(candidate.as_bytes()));
        if equal && found.is_none() {
            found = Some(index);
        }
    }

    match found {
        Some(index) => {
            hashes.remove(index);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SeededRandom;

    /// The RFC 6238 Appendix B secret for SHA-1.
    fn rfc_secret() -> TotpSecret {
        TotpSecret {
            bytes: *b"12345678901234567890",
        }
    }

    #[test]
    fn rfc6238_sha1_test_vectors() {
        let vectors = [
            (59, 94_287_082),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ];

        for (time, expected) in vectors {
            assert_eq!(
                code_for_step(&rfc_secret(), step_of(time), 8),
                expected,
                "T = {time}"
            );
        }
    }

    #[test]
    fn six_digit_code_is_the_low_digits() {
        assert_eq!(code_at(&rfc_secret(), 59), 287_082);
        assert_eq!(code_at(&rfc_secret(), 1_111_111_109), 81_804);
    }

    #[test]
    fn code_is_stable_within_a_step() {
        let secret = rfc_secret();

        assert_eq!(code_at(&secret, 30), code_at(&secret, 59));
        assert_ne!(code_at(&secret, 59), code_at(&secret, 60));
    }

    #[test]
    fn verify_accepts_the_current_step_and_returns_it() {
        let secret = rfc_secret();
        let now = 1_111_111_111;

        let code = format!("{:06}", code_at(&secret, now));

        assert_eq!(verify(&secret, &code, now, None), Some(now / 30));
    }

    #[test]
    fn verify_allows_one_step_of_drift_each_way() {
        let secret = rfc_secret();
        let now = 1_111_111_111;
        let step = now / 30;

        let previous = format!("{:06}", code_at(&secret, now - 30));
        let next = format!("{:06}", code_at(&secret, now + 30));
        let too_old = format!("{:06}", code_at(&secret, now - 60));
        let too_new = format!("{:06}", code_at(&secret, now + 60));

        assert_eq!(verify(&secret, &previous, now, None), Some(step - 1));
        assert_eq!(verify(&secret, &next, now, None), Some(step + 1));
        assert_eq!(verify(&secret, &too_old, now, None), None);
        assert_eq!(verify(&secret, &too_new, now, None), None);
    }

    #[test]
    fn verify_refuses_a_replayed_step() {
        let secret = rfc_secret();
        let now = 1_111_111_111;
        let code = format!("{:06}", code_at(&secret, now));

        let step = verify(&secret, &code, now, None).unwrap();

        assert_eq!(verify(&secret, &code, now, Some(step)), None);
        assert_eq!(verify(&secret, &code, now + 10, Some(step)), None);
        // An earlier code is refused once a later one was used.
        let previous = format!("{:06}", code_at(&secret, now - 30));
        assert_eq!(verify(&secret, &previous, now, Some(step)), None);
        // The next step is still fine.
        let next = format!("{:06}", code_at(&secret, now + 30));
        assert_eq!(verify(&secret, &next, now + 30, Some(step)), Some(step + 1));
    }

    #[test]
    fn verify_ignores_spaces() {
        let secret = rfc_secret();
        // 287082 at T = 59.
        assert_eq!(verify(&secret, " 287 082 ", 59, None), Some(1));
        assert_eq!(verify(&secret, "287082\n", 59, None), Some(1));
    }

    #[test]
    fn verify_refuses_malformed_codes() {
        let secret = rfc_secret();

        for typed in [
            "",
            "28708",
            "2870822",
            "28708a",
            "-87082",
            "２８７０８２",
            "287-082",
        ] {
            assert_eq!(verify(&secret, typed, 59, None), None, "{typed:?}");
        }
        assert_eq!(verify(&secret, "000000", 59, None), None);
    }

    #[test]
    fn base32_round_trip() {
        let secret = TotpSecret::generate(&SeededRandom::new(1)).unwrap();

        let encoded = secret.to_base32();
        let decoded = TotpSecret::from_base32(&encoded).unwrap();

        assert_eq!(encoded.len(), 32);
        assert!(!encoded.contains('='));
        assert_eq!(decoded.bytes, secret.bytes);
    }

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(rfc_secret().to_base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    }

    #[test]
    fn base32_accepts_hand_copied_forms() {
        let spaced = "gezd gnbv gy3t qojq gezd gnbv gy3t qojq";

        assert_eq!(
            TotpSecret::from_base32(spaced).unwrap().bytes,
            rfc_secret().bytes
        );
    }

    #[test]
    fn base32_refuses_bad_input() {
        assert!(matches!(
            TotpSecret::from_base32("GEZDGNBVGY3TQOJQ"),
            Err(TotpSecretError::WrongLength { bytes: 10 })
        ));
        assert!(matches!(
            TotpSecret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ1"),
            Err(TotpSecretError::NotBase32(_))
        ));
        let error = TotpSecret::from_base32("GEZDGNBVGY3TQOJQ").unwrap_err();
        assert_eq!(error.to_string(), "TOTP secret is 10 bytes; expected 20");
    }

    #[test]
    fn generated_secrets_come_from_the_random_source() {
        let random = SeededRandom::new(2);

        let first = TotpSecret::generate(&random).unwrap();
        let second = TotpSecret::generate(&random).unwrap();

        assert_ne!(first.bytes, second.bytes);
        assert_eq!(
            TotpSecret::generate(&SeededRandom::new(2)).unwrap().bytes,
            first.bytes
        );
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let secret = rfc_secret();

        let shown = format!("{secret:?}");

        assert_eq!(shown, "TotpSecret(redacted)");
    }

    #[test]
    fn provisioning_uri_encodes_issuer_and_account() {
        let uri = provisioning_uri(&rfc_secret(), "Acme Shoes & Co", "m.thompson@example.com");

        assert_eq!(
            uri,
            "otpauth://totp/Acme%20Shoes%20%26%20Co:m.thompson%40example.com\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Acme%20Shoes%20%26%20Co\
             &algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn provisioning_uri_encodes_separators_and_unicode() {
        let uri = provisioning_uri(&rfc_secret(), "Clientele", "anne:marie?#é");

        assert!(
            uri.starts_with("otpauth://totp/Clientele:anne%3Amarie%3F%23%C3%A9?secret="),
            "{uri}"
        );
    }

    #[test]
    fn qr_svg_is_plain_scalable_svg() {
        let uri = provisioning_uri(&rfc_secret(), "Clientele", "m.thompson");

        let svg = qr_svg(&uri).unwrap();

        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.ends_with("</svg>"));
        assert!(svg.contains("viewBox=\"0 0 "));
        let lower = svg.to_lowercase();
        for forbidden in [
            "<script",
            "javascript:",
            " on",
            "href",
            "<?xml",
            "<foreignobject",
        ] {
            assert!(!lower.contains(forbidden), "{forbidden} in {svg}");
        }
    }

    #[test]
    fn qr_svg_refuses_data_too_long_for_a_qr_code() {
        let error = qr_svg(&"x".repeat(5000)).unwrap_err();

        assert_eq!(error, QrCodeError(QrError::DataTooLong));
    }

    #[test]
    fn recovery_codes_have_the_documented_shape() {
        let codes = generate_recovery_codes(&SeededRandom::new(3), 10).unwrap();

        assert_eq!(codes.len(), 10);
        for code in &codes {
            let groups: Vec<&str> = code.split('-').collect();
            assert_eq!(groups.len(), RECOVERY_GROUPS, "{code}");
            assert!(
                groups.iter().all(|g| g.len() == RECOVERY_GROUP_LEN),
                "{code}"
            );
            assert!(
                code.bytes()
                    .filter(|b| *b != b'-')
                    .all(|b| RECOVERY_ALPHABET.contains(&b)),
                "{code}"
            );
        }
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), codes.len());
    }

    #[test]
    fn recovery_alphabet_has_no_ambiguous_symbols() {
        for ambiguous in [b'l', b'o', b'0', b'1'] {
            assert!(!RECOVERY_ALPHABET.contains(&ambiguous));
        }
        let mut sorted = RECOVERY_ALPHABET.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 32);
    }

    #[test]
    fn recovery_code_hash_ignores_case_spaces_and_dashes() {
        let stored = hash_recovery_code("abcd-efgh-jkmn-pqrs-tuvw-xyz2");

        assert_eq!(hash_recovery_code("ABCD EFGH JKMN PQRS TUVW XYZ2"), stored);
        assert_eq!(hash_recovery_code("abcdefghjkmnpqrstuvwxyz2"), stored);
        assert_eq!(stored.len(), 64);
        // SHA-256 of "abc" (FIPS 180-2 example).
        assert_eq!(
            hash_recovery_code("A-B C"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn recovery_code_works_once() {
        let codes = generate_recovery_codes(&SeededRandom::new(4), 3).unwrap();
        let mut hashes: Vec<String> = codes.iter().map(|c| hash_recovery_code(c)).collect();

        assert!(use_recovery_code(&mut hashes, &codes[1].to_uppercase()));
        assert_eq!(hashes.len(), 2);
        assert!(!use_recovery_code(&mut hashes, &codes[1]));
        assert!(use_recovery_code(&mut hashes, &codes[0]));
        assert!(use_recovery_code(&mut hashes, &codes[2]));
        assert!(hashes.is_empty());
    }

    #[test]
    fn empty_or_unknown_recovery_code_is_refused() {
        let mut hashes = vec![hash_recovery_code("abcd-efgh-jkmn-pqrs-tuvw-xyz2")];

        assert!(!use_recovery_code(&mut hashes, ""));
        assert!(!use_recovery_code(&mut hashes, " - "));
        assert!(!use_recovery_code(
            &mut hashes,
            "abcd-efgh-jkmn-pqrs-tuvw-xyz3"
        ));
        assert_eq!(hashes.len(), 1);
    }
}
