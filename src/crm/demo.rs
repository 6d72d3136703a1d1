//! Demo data: a few stores and realistic customers, deterministic from a seed, so a newcomer
//! sees a living system and benchmarks have data (`clientele demo`, `serve --dev --demo N`).
//!
//! Customers come from built-in lists of given and family names from many places (accents
//! kept, in NFC), live in one of seven countries with a postcode of that country's shape, and
//! have a phone number valid for their country (E.164), an email on a reserved example domain,
//! a loyalty id, often a POS id, consents and a preferred store. Every value that must be
//! unique (email, phone, loyalty id, POS id) is derived from the customer's number through a
//! bijection, so a million customers never collide.
//!
//! Planted duplicates, for the duplicate review: every fiftieth customer is a second profile
//! of the one before, with the same given name and address and a typo in the family name
//! (`similar name and same postcode`); a candidate is raised for each pair. A shared phone
//! cannot be planted: an identity belongs to one profile only, so the store refuses it.
//!
//! Customers are written through the importer ([`Customers::import_rows`]), in large change
//! sets and published by one final write.

use serde::Serialize;

use crate::audit::Actor;
use crate::auth::accounts::{Accounts, LocationForm};
use crate::domain::Id;
use crate::domain::account::LocationKind;
use crate::domain::customer::{Address, Channel, ExternalId, Identity, search_tokens};
use crate::store::{ChangeSet, Store};

use super::import::{ImportError, ImportRecord, ImportRow, ProgressFn};
use super::{CrmError, Customers, DUPLICATES, DuplicateCandidate, DuplicateStatus, Profile};

/// Smallest and largest demo sizes.
pub const MIN_CUSTOMERS: u64 = 1_000;
pub const MAX_CUSTOMERS: u64 = 1_000_000;

/// Every `PLANT_EVERY`th customer is a planted duplicate of the one before.
pub const PLANT_EVERY: u64 = 50;

const GIVEN_NAMES: &[&str] = &[
    "Zoë",
    "Amélie",
    "José",
    "Søren",
    "Björn",
    "Chloé",
    "Mateo",
    "Aisha",
    "Wei",
    "Yuki",
    "Olusegun",
    "Priya",
    "Siobhán",
    "Łukasz",
    "Ngozi",
    "François",
    "Inès",
    "Jürgen",
    "Emma",
    "Liam",
    "Olivia",
    "Noah",
    "Ava",
    "Lucas",
    "Sofía",
    "Hugo",
    "Léa",
    "Mohammed",
    "Fatima",
    "Ana",
    "João",
    "Giulia",
    "Marco",
    "Eleni",
    "Dimitris",
    "Hana",
    "Kenji",
    "Mei",
    "Arjun",
    "Ananya",
    "Kwame",
    "Amara",
    "Ciarán",
    "Niamh",
    "Agnieszka",
    "Tomás",
    "Élodie",
    "Anaïs",
    "Matthias",
    "Ingrid",
    "Astrid",
    "Oskar",
    "Pilar",
    "Álvaro",
    "Renée",
    "Noémie",
    "Gaël",
    "Daniel",
    "Sarah",
    "David",
    "Laura",
    "Thomas",
    "Julia",
    "Samuel",
    "Maya",
    "Elias",
];

const FAMILY_NAMES: &[&str] = &[
    "Núñez",
    "García",
    "Müller",
    "Schröder",
    "Dubois",
    "Lefèvre",
    "Rossi",
    "Bianchi",
    "O'Brien",
    "MacDonald",
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Taylor",
    "Nguyen",
    "Tran",
    "Kim",
    "Park",
    "Chen",
    "Wang",
    "Li",
    "Tanaka",
    "Sato",
    "Suzuki",
    "Okafor",
    "Adeyemi",
    "Mensah",
    "Kowalski",
    "Nowak",
    "Wiśniewski",
    "Jensen",
    "Nielsen",
    "Andersson",
    "Johansson",
    "Lindqvist",
    "Fernández",
    "Rodríguez",
    "Martínez",
    "López",
    "Gómez",
    "Pérez",
    "Sánchez",
    "Ferreira",
    "Gonçalves",
    "Papadopoulos",
    "Yılmaz",
    "Öztürk",
    "Kaya",
    "Patel",
    "Sharma",
    "Singh",
    "Gupta",
    "Haddad",
    "Khoury",
    "Cohen",
    "Levi",
    "van der Berg",
    "de Vries",
    "Janssen",
    "Bakker",
    "Moreau",
    "Fontaine",
    "Girard",
    "Bošković",
    "Novák",
    "Horváth",
    "Nagy",
    "Ó Súilleabháin",
    "Fitzgerald",
    "Weiß",
];

const STREETS: &[&str] = &[
    "High Street",
    "Station Road",
    "Rue de la Paix",
    "Hauptstraße",
    "Calle Mayor",
    "Via Roma",
    "Main Street",
    "Kerkstraat",
    "Church Lane",
    "Avenue Victor Hugo",
    "Bahnhofstraße",
    "Gran Vía",
    "Corso Italia",
    "Oak Avenue",
    "Prinsengracht",
];

/// A demo store.
struct DemoStore {
    code: &'static str,
    name: &'static str,
    time_zone: &'static str,
    country: &'static str,
    currency: &'static str,
}

const STORES: &[DemoStore] = &[
    DemoStore {
        code: "DEMO-NYC",
        name: "Fifth Avenue",
        time_zone: "America/New_York",
        country: "US",
        currency: "USD",
    },
    DemoStore {
        code: "DEMO-LON",
        name: "Covent Garden",
        time_zone: "Europe/London",
        country: "GB",
        currency: "GBP",
    },
    DemoStore {
        code: "DEMO-PAR",
        name: "Le Marais",
        time_zone: "Europe/Paris",
        country: "FR",
        currency: "EUR",
    },
    DemoStore {
        code: "DEMO-BER",
        name: "Mitte",
        time_zone: "Europe/Berlin",
        country: "DE",
        currency: "EUR",
    },
];

/// A city, its region, and how its postcodes are made from a draw.
type City = (&'static str, &'static str, fn(u64) -> String);

/// A country: cities with postcode shapes, and how its mobile numbers look.
struct Country {
    code: &'static str,
    cities: &'static [City],
    /// E.164 prefix of the mobile numbers used, and how many numbers follow it.
    mobile_prefixes: &'static [&'static str],
    subscriber_digits: u32,
}

const COUNTRIES: &[Country] = &[
    Country {
        code: "US",
        cities: &[
            ("New York", "NY", |r| format!("100{:02}", r % 99 + 1)),
            ("Chicago", "IL", |r| format!("606{:02}", r % 60 + 1)),
            ("San Francisco", "CA", |r| format!("941{:02}", r % 34 + 2)),
            ("Austin", "TX", |r| format!("787{:02}", r % 50 + 1)),
        ],
        // The exchange (the digit after the area code) must not start with 0 or 1.
        mobile_prefixes: &["+12124", "+13126", "+14157", "+15128"],
        subscriber_digits: 6,
    },
    Country {
        code: "GB",
        cities: &[
            ("London", "", |r| {
                format!("SW{} {}{}", r % 20 + 1, r % 9 + 1, two_letters(r))
            }),
            ("Manchester", "", |r| {
                format!("M{} {}{}", r % 40 + 1, r % 9 + 1, two_letters(r))
            }),
            ("Edinburgh", "", |r| {
                format!("EH{} {}{}", r % 17 + 1, r % 9 + 1, two_letters(r))
            }),
        ],
        // 071, 072 and 073 are mobile ranges allocated whole (077 to 079 have gaps).
        mobile_prefixes: &["+4471", "+4472", "+4473"],
        subscriber_digits: 8,
    },
    Country {
        code: "FR",
        cities: &[
            ("Paris", "Île-de-France", |r| {
                format!("750{:02}", r % 20 + 1)
            }),
            ("Lyon", "Auvergne-Rhône-Alpes", |r| {
                format!("6900{}", r % 9 + 1)
            }),
            ("Marseille", "Provence-Alpes-Côte d'Azur", |r| {
                format!("130{:02}", r % 16 + 1)
            }),
        ],
        // 063, 069, 070 to 072 are not (or not wholly) mobile ranges.
        mobile_prefixes: &[
            "+3361", "+3362", "+3364", "+3365", "+3366", "+3367", "+3368", "+3375", "+3376",
            "+3377", "+3378",
        ],
        subscriber_digits: 7,
    },
    Country {
        code: "DE",
        cities: &[
            ("Berlin", "Berlin", |r| format!("10{:03}", r % 900 + 100)),
            ("München", "Bayern", |r| format!("80{:03}", r % 900 + 100)),
            ("Hamburg", "Hamburg", |r| format!("20{:03}", r % 900 + 100)),
        ],
        // 015x numbers have eight digits after the prefix, 017x seven or eight.
        mobile_prefixes: &["+49151", "+49152", "+49170", "+49171"],
        subscriber_digits: 8,
    },
    Country {
        code: "ES",
        cities: &[
            ("Madrid", "Madrid", |r| format!("280{:02}", r % 50 + 1)),
            ("Barcelona", "Cataluña", |r| {
                format!("080{:02}", r % 40 + 1)
            }),
        ],
        mobile_prefixes: &["+346"],
        subscriber_digits: 8,
    },
    Country {
        code: "IT",
        cities: &[
            ("Roma", "Lazio", |r| format!("001{:02}", r % 99 + 1)),
            ("Milano", "Lombardia", |r| format!("201{:02}", r % 99 + 1)),
        ],
        mobile_prefixes: &["+39333", "+39347"],
        subscriber_digits: 7,
    },
    Country {
        code: "NL",
        cities: &[
            ("Amsterdam", "Noord-Holland", |r| {
                format!("10{:02} {}", r % 90 + 10, two_letters(r))
            }),
            ("Utrecht", "Utrecht", |r| {
                format!("35{:02} {}", r % 90 + 10, two_letters(r))
            }),
        ],
        // 06-1 to 06-5 are mobile; 06-6, 06-7 and 06-9 are not.
        mobile_prefixes: &["+3161", "+3162", "+3163", "+3164", "+3165"],
        subscriber_digits: 7,
    },
];

fn two_letters(r: u64) -> String {
    // Letters used in UK and Dutch postcodes (no C, I, K, M, O, V).
    const LETTERS: &[u8] = b"ABDEFGHJLNPQRSTUWXYZ";
    let len = LETTERS.len() as u64;
    let a = LETTERS[((r / 7) % len) as usize] as char;
    let b = LETTERS[((r / 131) % len) as usize] as char;
    format!("{a}{b}")
}

/// `SplitMix64`: small, fast and deterministic; not for anything secret.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn for_customer(seed: u64, number: u64) -> Self {
        let mut rng = Self(seed ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// True with `percent` chance.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A bijection on `0..space` (for `space` a power of ten): unique values from unique numbers
/// that do not look sequential.
fn scatter(number: u64, space: u64, seed: u64) -> u64 {
    // 7_777_777 and 10^k share no factor (it is odd and not a multiple of 5).
    (number.wrapping_mul(7_777_777) + seed % space) % space
}

/// The customers of a demo of `count` customers from `seed`: the same seed gives the same
/// customers.
#[must_use]
pub fn demo_rows(count: u64, seed: u64, stores: &[Id]) -> Vec<ImportRow> {
    (0..count).map(|n| demo_row(n, seed, stores)).collect()
}

/// Customer number `n` of the demo from `seed`.
#[must_use]
#[allow(clippy::too_many_lines)] // one profile field after another, in the order of the form
pub fn demo_row(n: u64, seed: u64, stores: &[Id]) -> ImportRow {
    let twin_of = (n % PLANT_EVERY == PLANT_EVERY - 1 && n > 0).then(|| n - 1);
    // A planted duplicate starts from the same draw as the customer it copies.
    let mut rng = Rng::for_customer(seed, twin_of.unwrap_or(n));
    let given = (*rng.pick(GIVEN_NAMES)).to_owned();
    let mut family = (*rng.pick(FAMILY_NAMES)).to_owned();
    let country = rng.pick(COUNTRIES);
    let (city, region, postcode) = rng.pick(country.cities);
    let house = rng.below(180) + 1;
    let street = rng.pick(STREETS);
    let postcode_draw = rng.next();
    let address = Address {
        line1: format!("{house} {street}"),
        line2: String::new(),
        postcode: postcode(postcode_draw).to_uppercase(),
        city: (*city).to_owned(),
        region: (*region).to_owned(),
        country: country.code.to_owned(),
    };
    if twin_of.is_some() {
        family = typo(&family, n);
    }
    // From here on, the customer's own draws.
    let mut rng = Rng::for_customer(seed ^ 0x5EED, n);

    let folded = |text: &str| search_tokens(text).join("");
    let domains = [
        "example.com",
        "example.org",
        "example.net",
        "mail.example.com",
    ];
    let emails = if rng.chance(90) {
        vec![format!(
            "{}.{}{}@{}",
            folded(&given),
            folded(&family),
            n,
            rng.pick(&domains)
        )]
    } else {
        Vec::new()
    };
    let phones = if rng.chance(85) {
        let prefix = rng.pick(country.mobile_prefixes);
        let space = 10u64.pow(country.subscriber_digits);
        let subscriber = scatter(n, space, seed);
        vec![format!(
            "{prefix}{subscriber:0width$}",
            width = country.subscriber_digits as usize
        )]
    } else {
        Vec::new()
    };
    let loyalty_ids = vec![format!("CL{:09}", scatter(n, 1_000_000_000, seed))];
    let external_ids = if rng.chance(50) {
        vec![ExternalId {
            source: "pos".into(),
            id: format!("P{:08}", scatter(n, 100_000_000, seed >> 7)),
        }]
    } else {
        Vec::new()
    };
    let birthday = rng.chance(75).then(|| {
        let year = 1940 + rng.below(67) as i16;
        let month = rng.below(12) as i8 + 1;
        let day = rng.below(28) as i8 + 1;
        jiff::civil::date(year, month, day)
    });
    let tags = if rng.chance(20) {
        vec![(*rng.pick(&["vip", "newsletter", "wholesale", "staff", "student"])).to_owned()]
    } else {
        Vec::new()
    };
    let preferred_channel = match rng.below(3) {
        0 => Some(Channel::Email),
        1 => Some(Channel::Sms),
        _ => None,
    };
    let preferred_store = (!stores.is_empty()).then(|| *rng.pick(stores));
    let mut consents = Vec::new();
    if rng.chance(70) {
        consents.push((Channel::Email, rng.chance(85)));
    }
    if rng.chance(45) {
        consents.push((Channel::Sms, rng.chance(80)));
    }
    if rng.chance(20) {
        consents.push((Channel::Post, true));
    }
    ImportRow {
        line: n + 2,
        profile: Profile {
            given_name: given,
            family_name: family,
            emails,
            phones,
            addresses: vec![address],
            birthday,
            loyalty_ids,
            external_ids,
            tags,
            preferred_channel,
            preferred_store,
        },
        consents,
        wording: "demo-v1".into(),
    }
}

/// A plausible typing mistake: two neighbouring letters swapped, one dropped or one doubled.
fn typo(name: &str, n: u64) -> String {
    let chars: Vec<char> = name.chars().collect();
    let letters: Vec<usize> = (1..chars.len())
        .filter(|&i| chars[i].is_alphabetic() && chars[i - 1].is_alphabetic())
        .collect();
    if letters.is_empty() {
        return format!("{name}e");
    }
    let at = letters[(n / PLANT_EVERY) as usize % letters.len()];
    let mut out = chars.clone();
    match (n / PLANT_EVERY) % 3 {
        0 if chars[at] != chars[at - 1] => out.swap(at, at - 1),
        1 if chars.len() > 3 => {
            out.remove(at);
        }
        _ => out.insert(at, chars[at]),
    }
    out.into_iter().collect()
}

/// What a demo fill made.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DemoReport {
    pub stores: usize,
    pub customers: u64,
    pub planted_duplicates: u64,
    pub import: Option<ImportRecord>,
}

/// Why a demo fill failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the demo size must be between {MIN_CUSTOMERS} and {MAX_CUSTOMERS} customers, not {0}")]
    Size(u64),
    #[error("demo stores: {0}")]
    Stores(String),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Crm(#[from] CrmError),
}

/// Creates the demo stores that do not exist yet (by code); returns every demo store's id.
pub async fn ensure_stores(accounts: &Accounts, actor: &Actor) -> Result<Vec<Id>, DemoError> {
    let existing = accounts
        .locations()
        .map_err(|e| DemoError::Stores(e.to_string()))?;
    let mut ids = Vec::new();
    for store in STORES {
        if let Some(found) = existing.iter().find(|l| l.code == store.code) {
            ids.push(found.id);
            continue;
        }
        let form = LocationForm {
            code: store.code.into(),
            name: store.name.into(),
            kind: LocationKind::Store,
            time_zone: store.time_zone.into(),
            country: store.country.into(),
            currency: store.currency.into(),
            address: String::new(),
        };
        let location = accounts
            .save_location(None, form, actor.clone())
            .await
            .map_err(|e| DemoError::Stores(e.to_string()))?;
        ids.push(location.id);
    }
    Ok(ids)
}

impl Customers {
    /// Fills the store with the demo of `count` customers from `seed`: stores, customers,
    /// planted duplicates raised for review. Running it again with the same seed changes
    /// nothing (the importer matches every customer).
    pub async fn fill_demo(
        &self,
        accounts: &Accounts,
        count: u64,
        seed: u64,
        progress: ProgressFn<'_>,
    ) -> Result<DemoReport, DemoError> {
        if !(MIN_CUSTOMERS..=MAX_CUSTOMERS).contains(&count) {
            return Err(DemoError::Size(count));
        }
        let actor = Actor::system("demo");
        let stores = ensure_stores(accounts, &actor).await?;
        let rows = demo_rows(count, seed, &stores);
        let record = self.import_rows(rows, actor, progress).await?;
        let planted = self.raise_planted(count, seed, &stores).await?;
        Ok(DemoReport {
            stores: stores.len(),
            customers: count,
            planted_duplicates: planted,
            import: Some(record),
        })
    }

    /// Raises a duplicate candidate for every planted pair, in one write.
    async fn raise_planted(&self, count: u64, seed: u64, stores: &[Id]) -> Result<u64, CrmError> {
        let mut set = ChangeSet::new();
        let mut planted = 0;
        let now = self.now();
        for twin in (PLANT_EVERY - 1..count).step_by(PLANT_EVERY as usize) {
            let id_of = |n: u64| -> Result<Option<Id>, CrmError> {
                let row = demo_row(n, seed, stores);
                match row.profile.loyalty_ids.first() {
                    Some(loyalty) => self.find(&Identity::Loyalty(loyalty.clone())),
                    None => Ok(None),
                }
            };
            let (Some(a), Some(b)) = (id_of(twin - 1)?, id_of(twin)?) else {
                continue;
            };
            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
            let candidate = DuplicateCandidate {
                a: lo,
                b: hi,
                reasons: vec!["similar name and same postcode".into()],
                score: 70,
                raised_at: now,
                status: DuplicateStatus::Open,
            };
            set.put(
                DUPLICATES,
                super::pair_key(lo, hi),
                Store::json(&candidate)?,
            );
            planted += 1;
        }
        self.store().commit(set).await?;
        Ok(planted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::customer::normalise_phone;

    #[test]
    fn the_same_seed_gives_the_same_customers() {
        let a = demo_rows(200, 7, &[]);
        let b = demo_rows(200, 7, &[]);
        let c = demo_rows(200, 8, &[]);
        assert_eq!(a, b);
        assert_ne!(
            a.iter().map(|r| &r.profile.family_name).collect::<Vec<_>>(),
            c.iter().map(|r| &r.profile.family_name).collect::<Vec<_>>()
        );
    }

    #[test]
    fn phones_are_valid_e164_for_their_country() {
        let mut invalid = Vec::new();
        for row in demo_rows(20_000, 42, &[]) {
            for phone in &row.profile.phones {
                let country = &row.profile.addresses[0].country;
                if normalise_phone("phone", phone, country).as_deref() != Ok(phone.as_str()) {
                    invalid.push(format!("{phone} ({country})"));
                }
            }
        }
        assert!(
            invalid.is_empty(),
            "{} invalid, such as {:?}",
            invalid.len(),
            &invalid[..invalid.len().min(20)]
        );
    }

    #[test]
    fn identities_are_unique_and_names_pass_the_rules() {
        let rows = demo_rows(20_000, 3, &[]);
        let mut seen = std::collections::HashSet::new();
        for row in &rows {
            for identity in super::super::import::identities_of(&row.profile) {
                assert!(seen.insert(identity.clone()), "{identity:?} twice");
            }
            crate::domain::customer::clean_name("family_name", &row.profile.family_name).unwrap();
            for email in &row.profile.emails {
                assert_eq!(
                    crate::domain::customer::normalise_email("email", email).as_deref(),
                    Ok(email.as_str())
                );
            }
        }
    }

    #[test]
    fn planted_duplicates_share_given_name_and_postcode_with_a_typo() {
        let rows = demo_rows(200, 11, &[]);
        let base = &rows[(PLANT_EVERY - 2) as usize].profile;
        let twin = &rows[(PLANT_EVERY - 1) as usize].profile;
        assert_eq!(base.given_name, twin.given_name);
        assert_eq!(base.addresses, twin.addresses);
        assert_ne!(base.family_name, twin.family_name);
        assert_ne!(base.emails, twin.emails);
    }
}
