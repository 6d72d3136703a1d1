//! Staff accounts, roles, locations and integration tokens.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::Id;

/// What a staff member may do. Customer profiles are chain-wide; sales, stock, reports and
/// exports are limited to the user's stores for managers and associates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Users, settings, integrations; every store.
    Admin,
    /// Their stores: customers, inventory, reports, approvals.
    Manager,
    /// Their stores: look-up and customer service.
    Associate,
    /// Audit trail and privacy requests; read-only elsewhere; every store.
    Compliance,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Admin,
        Role::Manager,
        Role::Associate,
        Role::Compliance,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Manager => "manager",
            Self::Associate => "associate",
            Self::Compliance => "compliance",
        }
    }

    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Admin => "Administrator",
            Self::Manager => "Manager",
            Self::Associate => "Associate",
            Self::Compliance => "Compliance officer",
        }
    }

    /// Whether this role must use a second factor.
    #[must_use]
    pub fn requires_second_factor(self) -> bool {
        matches!(self, Self::Admin | Self::Compliance)
    }

    /// Whether this role sees every store's figures.
    #[must_use]
    pub fn chain_wide(self) -> bool {
        matches!(self, Self::Admin | Self::Compliance)
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role `{s}` (use admin, manager, associate or compliance)")
            })
    }
}

/// A staff account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: Id,
    /// Sign-in name, stored lower-case.
    pub login: String,
    pub display_name: String,
    pub role: Role,
    /// Stores whose figures this user may see (ignored for chain-wide roles).
    pub stores: Vec<Id>,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// The next sign-in must choose a new password (first login, reset by an admin).
    pub must_change_password: bool,
    pub disabled: bool,
    /// Base-32 TOTP secret once enrolled.
    pub totp_secret: Option<String>,
    /// Last TOTP time step accepted, so a code is never accepted twice.
    pub totp_last_step: Option<i64>,
    /// SHA-256 of the unused recovery codes.
    pub recovery_codes: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl User {
    /// Whether the user may see the figures of `store`.
    #[must_use]
    pub fn can_see_store(&self, store: Id) -> bool {
        self.role.chain_wide() || self.stores.contains(&store)
    }
}

/// Kind of location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationKind {
    Store,
    Warehouse,
}

/// A store or warehouse of the retailer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Location {
    pub id: Id,
    /// Short code used by POS and ERP, unique, upper-case.
    pub code: String,
    pub name: String,
    pub kind: LocationKind,
    /// IANA time zone for display and business days.
    pub time_zone: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// ISO 4217.
    pub currency: String,
    pub address: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// An integration token for `/api/v1`; the secret itself is never stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: Id,
    pub name: String,
    pub scopes: Vec<String>,
    /// Stores the token may act for; empty means every store.
    pub stores: Vec<Id>,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    pub created_by: Id,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// The scopes an integration token can carry.
pub const SCOPES: &[(&str, &str)] = &[
    ("ingest:pos", "push POS sales and returns"),
    ("ingest:erp", "push ERP stock and orders"),
    ("ingest:rfid", "push RFID and EPCIS events"),
    ("read:customers", "read customer profiles"),
    ("read:inventory", "read products and stock availability"),
    (
        "write:customers",
        "create, change and merge customer profiles, record consents",
    ),
    ("read:locations", "read stores and warehouses"),
    ("write:catalog", "create and change products"),
    ("read:sync", "read the connectors' health (monitoring)"),
];
