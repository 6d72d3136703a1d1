//! What one audit entry says, and the one call every feature uses to record it.
//!
//! ```ignore
//! Event::new(Action::UserCreated)
//!     .by(actor)
//!     .target("user", user.id)
//!     .add_to(&mut set); // lands with the business write, or neither does
//! ```
//!
//! Values of personal data never go into an entry: targets are ids, and a change lists the
//! names of the fields it touched, never their contents.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::Id;
use crate::domain::account::{ApiToken, Role, User};
use crate::store::{Chained, ChangeSet, Link};

use super::AUDIT;
use super::entry::{self, Entry, Members, Unlinked};

/// Longest reason kept; longer ones are cut at a character boundary.
pub const MAX_REASON: usize = 500;

macro_rules! actions {
    ($( $variant:ident = $code:literal, $pci:literal, $doc:literal; )*) => {
        /// Every kind of event the trail records. The code is what an entry stores; it never
        /// changes once released.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Action {
            $( #[doc = $doc] $variant, )*
        }

        impl Action {
            /// Every action, for tests and the filter list.
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// The stable code stored in entries (`area.verb`).
            #[must_use]
            pub const fn code(self) -> &'static str {
                match self { $(Self::$variant => $code,)* }
            }

            /// The PCI DSS v4.0 requirement 10.2.1.x sub-requirement the event answers, or ""
            /// when it answers none (it is recorded for the retailer's own oversight).
            #[must_use]
            pub const fn pci(self) -> &'static str {
                match self { $(Self::$variant => $pci,)* }
            }

            /// What happened, in words.
            #[must_use]
            pub const fn describe(self) -> &'static str {
                match self { $(Self::$variant => $doc,)* }
            }

            /// The action with this code.
            #[must_use]
            pub fn from_code(code: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|a| a.code() == code)
            }
        }
    };
}

actions! {
    // Sign-in and sessions.
    SignIn = "auth.sign_in", "10.2.1.4", "Sign-in with a password";
    SecondFactor = "auth.second_factor", "10.2.1.4", "Second-factor code checked";
    SignInThrottled = "auth.throttled", "10.2.1.4", "Sign-in refused: too many failures";
    SignOut = "auth.sign_out", "10.2.1.5", "Signed out";
    SessionExpired = "auth.session_expired", "10.2.1.5", "Session ended by timeout";
    SessionRevoked = "auth.session_revoked", "10.2.1.5", "Session revoked by an administrator";
    AccessDenied = "auth.access_denied", "10.2.1.4", "Request refused by the access guard";
    PasswordChanged = "auth.password_changed", "10.2.1.5", "Own password changed";
    PasswordReset = "auth.password_reset", "10.2.1.5", "Password reset by an administrator";
    SecondFactorEnrolled = "auth.second_factor_enrolled", "10.2.1.5", "Second factor enrolled";
    RecoveryCodeUsed = "auth.recovery_code_used", "10.2.1.5", "Recovery code used";
    // Accounts, tokens, settings.
    UserCreated = "user.created", "10.2.1.5", "Staff account created";
    UserUpdated = "user.updated", "10.2.1.5", "Staff account changed";
    UserRoleChanged = "user.role_changed", "10.2.1.5", "Role of a staff account changed";
    UserDisabled = "user.disabled", "10.2.1.5", "Staff account disabled";
    UserEnabled = "user.enabled", "10.2.1.5", "Staff account enabled";
    TokenCreated = "token.created", "10.2.1.5", "Integration token created";
    TokenRevoked = "token.revoked", "10.2.1.5", "Integration token revoked";
    TokenDenied = "token.denied", "10.2.1.4", "Integration token refused";
    WebhookRejected = "webhook.rejected", "10.2.1.4", "POS webhook refused: bad or missing signature";
    SettingChanged = "setting.changed", "10.2.1.2", "Setting changed";
    LocationCreated = "location.created", "10.2.1.7", "Store or warehouse created";
    LocationUpdated = "location.updated", "10.2.1.2", "Store or warehouse changed";
    // Customers and privacy.
    CustomerCreated = "customer.created", "10.2.1.1", "Customer created";
    CustomerUpdated = "customer.updated", "10.2.1.1", "Customer changed";
    CustomerDeleted = "customer.deleted", "10.2.1.1", "Customer deleted";
    CustomerViewed = "customer.viewed", "10.2.1.1", "Customer profile opened";
    CustomerSearched = "customer.searched", "10.2.1.1", "Customer search";
    CustomerMerged = "customer.merged", "10.2.1.1", "Customers merged";
    CustomerUnmerged = "customer.unmerged", "10.2.1.1", "Customer merge undone";
    CustomersImported = "customer.imported", "10.2.1.1", "Customers imported from a file";
    CustomersExported = "customer.exported", "10.2.1.1", "Customers exported to a file";
    ConsentChanged = "customer.consent_changed", "10.2.1.1", "Consent granted or withdrawn";
    NoteAdded = "customer.note_added", "10.2.1.1", "Note added to a customer";
    PrivacyAccessExported = "privacy.access_exported", "10.2.1.1", "Subject access export";
    PrivacyErased = "privacy.erased", "10.2.1.1", "Customer erased (key destroyed)";
    RetentionErased = "privacy.retention_erased", "10.2.1.1", "Inactive customers erased";
    LegalHoldChanged = "privacy.legal_hold_changed", "10.2.1.2", "Legal hold set or lifted";
    // Catalog, stock, sales, integrations.
    ProductCreated = "product.created", "", "Product created";
    ProductUpdated = "product.updated", "", "Product changed";
    ProductsImported = "product.imported", "", "Products imported from a file";
    StockMoved = "inventory.moved", "", "Stock movement recorded";
    SaleIngested = "sale.ingested", "10.2.1.1", "Sale received from a register";
    SyncConfigured = "sync.configured", "10.2.1.2", "Connector configuration changed";
    SyncRunRequested = "sync.run_requested", "10.2.1.2", "Connector run started by hand";
    SyncPaused = "sync.paused", "10.2.1.2", "Connector paused";
    SyncResumed = "sync.resumed", "10.2.1.2", "Connector resumed";
    DeadLetterCreated = "sync.dead_letter_created", "", "File refused by a connector and held as a dead letter";
    DeadLetterViewed = "sync.dead_letter_viewed", "10.2.1.1", "Dead letter contents opened";
    DeadLetterReplayed = "sync.dead_letter_replayed", "10.2.1.2", "Dead letter replayed";
    DeadLetterDiscarded = "sync.dead_letter_discarded", "10.2.1.2", "Dead letter discarded";
    ActionApproved = "action.approved", "10.2.1.2", "Proposed action approved";
    ActionRejected = "action.rejected", "10.2.1.2", "Proposed action rejected";
    // The appliance and the trail itself.
    AuditStarted = "audit.started", "10.2.1.6", "Audit trail started";
    AuditStopped = "audit.stopped", "10.2.1.6", "Audit trail stopped";
    AuditViewed = "audit.viewed", "10.2.1.3", "Audit trail viewed";
    AuditExported = "audit.exported", "10.2.1.3", "Audit trail exported";
    AuditPruned = "audit.pruned", "10.2.1.6", "Old audit entries archived and dropped";
    KeysRotated = "keys.rotated", "10.2.1.2", "Data-key term rotated";
    KeysRewrapped = "keys.rewrapped", "10.2.1.2", "Master key changed";
    BackupCreated = "backup.created", "10.2.1.2", "Backup written";
    BackupVerified = "backup.verified", "10.2.1.2", "Backup verified";
    BackupRestored = "backup.restored", "10.2.1.6", "Backup restored";
    StoreMigrated = "store.migrated", "10.2.1.7", "Store schema migrated";
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// How the attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    /// The attempt was made and failed (wrong password, invalid input).
    Failure,
    /// The attempt was not allowed (role, scope, throttle, store scope).
    Denied,
}

impl Outcome {
    pub const ALL: [Self; 3] = [Self::Success, Self::Failure, Self::Denied];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Denied => "denied",
        }
    }
}

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A staff member signed in to the web UI or API.
    User,
    /// An integration token.
    Token,
    /// The appliance itself: a scheduled job, start-up, a command-line tool.
    System,
    /// Nobody identified yet (a sign-in for a login that does not exist).
    Anonymous,
}

impl ActorKind {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Token => "token",
            Self::System => "system",
            Self::Anonymous => "anonymous",
        }
    }
}

/// The actor of an event and where the request came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub kind: ActorKind,
    /// User or token id, or the job's name.
    pub id: String,
    /// Login, token name or job name: what an auditor reads.
    pub name: String,
    pub role: Option<Role>,
    /// Client IP address, when the event came over the network.
    pub address: Option<String>,
}

impl Actor {
    #[must_use]
    pub fn user(user: &User) -> Self {
        Self {
            kind: ActorKind::User,
            id: user.id.to_string(),
            name: user.login.clone(),
            role: Some(user.role),
            address: None,
        }
    }

    #[must_use]
    pub fn token(token: &ApiToken) -> Self {
        Self {
            kind: ActorKind::Token,
            id: token.id.to_string(),
            name: token.name.clone(),
            role: None,
            address: None,
        }
    }

    /// The appliance itself, named by the job or tool that acted (`"startup"`, `"cli"`,
    /// `"key-rotation"`, `"sync:pos-main"`).
    #[must_use]
    pub fn system(job: &str) -> Self {
        Self {
            kind: ActorKind::System,
            id: job.to_owned(),
            name: job.to_owned(),
            role: None,
            address: None,
        }
    }

    /// Someone not identified: what they typed is not recorded (it may be a password typed
    /// in the wrong field).
    #[must_use]
    pub fn anonymous() -> Self {
        Self {
            kind: ActorKind::Anonymous,
            id: String::new(),
            name: String::new(),
            role: None,
            address: None,
        }
    }

    /// The same actor, seen from this client address.
    #[must_use]
    pub fn from_address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }
}

/// One event to record. Build it, then [`Event::add_to`] the change set of the business write
/// (or [`super::Audit::record`] it alone for reads and refusals).
#[derive(Debug, Clone)]
pub struct Event {
    pub action: Action,
    pub outcome: Outcome,
    pub actor: Actor,
    pub target_type: Option<&'static str>,
    pub target_id: Option<String>,
    pub store: Option<Id>,
    pub reason: Cow<'static, str>,
    pub fields: Vec<Cow<'static, str>>,
}

impl Event {
    /// A successful `action` by the system; set the actor with [`Event::by`].
    #[must_use]
    pub fn new(action: Action) -> Self {
        Self {
            action,
            outcome: Outcome::Success,
            actor: Actor::system("clientele"),
            target_type: None,
            target_id: None,
            store: None,
            reason: Cow::Borrowed(""),
            fields: Vec::new(),
        }
    }

    #[must_use]
    pub fn by(mut self, actor: Actor) -> Self {
        self.actor = actor;
        self
    }

    /// What the event is about: a type (`"user"`, `"customer"`, ...) and an id, never a
    /// personal value.
    #[must_use]
    pub fn target(mut self, kind: &'static str, id: impl fmt::Display) -> Self {
        self.target_type = Some(kind);
        self.target_id = Some(id.to_string());
        self
    }

    /// The store the event concerns.
    #[must_use]
    pub fn store(mut self, store: Id) -> Self {
        self.store = Some(store);
        self
    }

    #[must_use]
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// Shorthand for a failed attempt with its reason.
    #[must_use]
    pub fn failed(self, reason: impl Into<Cow<'static, str>>) -> Self {
        self.outcome(Outcome::Failure).reason(reason)
    }

    /// Shorthand for a refused attempt with its reason.
    #[must_use]
    pub fn denied(self, reason: impl Into<Cow<'static, str>>) -> Self {
        self.outcome(Outcome::Denied).reason(reason)
    }

    /// Why, in words; never personal values.
    #[must_use]
    pub fn reason(mut self, reason: impl Into<Cow<'static, str>>) -> Self {
        self.reason = reason.into();
        self
    }

    /// Names of the fields a change touched (`"email"`, `"role"`), never their values.
    #[must_use]
    pub fn fields<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Cow<'static, str>>,
    {
        self.fields = names.into_iter().map(Into::into).collect();
        self
    }

    /// Adds the entry to `set`: it is linked into the chain when the set commits, and the set
    /// lands with it or not at all.
    pub fn add_to(self, set: &mut ChangeSet) {
        set.append(AUDIT, Box::new(self.unlinked()));
    }

    /// The entry's members that do not depend on its place in the chain, encoded now (in the
    /// writer's task), or why the event cannot be recorded.
    fn unlinked(&self) -> Prepared {
        if let Some(bad) = self.fields.iter().find(|f| !entry::is_field_name(f)) {
            return Prepared(Err(format!(
                "field names are short identifiers, not values ({} characters refused)",
                bad.chars().count()
            )));
        }
        let role = self.actor.role.map(Role::as_str);
        let store = self.store.map(|s| s.to_string());
        let reason = clean_reason(&self.reason);
        let fields: Vec<&str> = self.fields.iter().map(AsRef::as_ref).collect();
        Prepared(Unlinked::encode(&Members {
            action: self.action.code(),
            outcome: self.outcome,
            actor_kind: self.actor.kind,
            actor_id: &self.actor.id,
            actor_name: &self.actor.name,
            actor_role: role,
            address: self.actor.address.as_deref(),
            target_type: self.target_type,
            target_id: self.target_id.as_deref(),
            store: store.as_deref(),
            reason: &reason,
            fields: &fields,
        }))
    }

    /// The entry this event becomes at `link`.
    #[must_use]
    pub fn to_entry(&self, link: &Link) -> Entry {
        Entry {
            seq: link.seq,
            time: entry::format_time(link.time),
            action: self.action.code().to_owned(),
            outcome: self.outcome,
            actor_kind: self.actor.kind,
            actor_id: self.actor.id.clone(),
            actor_name: self.actor.name.clone(),
            actor_role: self.actor.role.map(|r| r.as_str().to_owned()),
            address: self.actor.address.clone(),
            target_type: self.target_type.map(str::to_owned),
            target_id: self.target_id.clone(),
            store: self.store.map(|s| s.to_string()),
            reason: clean_reason(&self.reason),
            fields: self.fields.iter().map(ToString::to_string).collect(),
            prev: data_encoding::HEXLOWER.encode(&link.prev),
            hash: String::new(),
        }
    }
}

/// Control characters dropped, cut to [`MAX_REASON`] bytes at a character boundary.
fn clean_reason(reason: &str) -> String {
    let mut reason: String = reason
        .chars()
        .filter(|c| !c.is_control() || *c == ' ')
        .collect();
    if reason.len() > MAX_REASON {
        let cut = (0..=MAX_REASON)
            .rev()
            .find(|i| reason.is_char_boundary(*i))
            .unwrap_or(0);
        reason.truncate(cut);
    }
    reason
}

/// An event as queued for the chain: its members already encoded, or the reason it is refused
/// (which refuses the whole change set when it commits: the trail fails closed).
#[derive(Debug)]
struct Prepared(Result<Unlinked, String>);

impl Chained for Prepared {
    fn finish(&self, link: &Link) -> Result<(Vec<u8>, [u8; 32]), String> {
        let unlinked = self.0.as_ref().map_err(Clone::clone)?;
        let (line, hash) = unlinked.link(link.seq, link.time, &link.prev);
        Ok((line.into_bytes(), hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind of awkward value: quotes, backslashes, controls, DEL, C1, line separators.
    fn awkward() -> Event {
        Event::new(Action::UserCreated)
            .by(Actor {
                kind: ActorKind::User,
                id: "01JX\u{7f}".into(),
                name: "a\"dmin\n|=]\\\u{1}\u{7f}\u{85}\u{2028}\u{2029}é".into(),
                role: Some(Role::Admin),
                address: Some("10.0.0.1".into()),
            })
            .target("user", "01JY\u{9f}")
            .store(Id::from_parts(jiff::Timestamp::UNIX_EPOCH, [7; 10]))
            .denied("tab\there, bell \u{7} and \u{2028} gone; \"quoted\"")
            .fields(["email", "address.postcode"])
    }

    #[test]
    fn the_prepared_line_is_the_canonical_line_of_the_entry() {
        let link = Link {
            seq: 42,
            prev: [0xab; 32],
            time: jiff::Timestamp::from_microsecond(1_780_000_000_123_456).unwrap(),
        };
        for event in [awkward(), Event::new(Action::AuditStarted)] {
            let (bytes, hash) = event.unlinked().finish(&link).unwrap();
            let mut entry = event.to_entry(&link);
            assert_eq!(entry.seal().unwrap(), hash);
            let line = String::from_utf8(bytes).unwrap();
            assert_eq!(line, entry.to_line().unwrap());
            assert_eq!(Entry::parse_line(&line).unwrap(), entry);
        }
    }

    #[test]
    fn a_value_given_as_a_field_name_refuses_the_entry() {
        let link = Link {
            seq: 1,
            prev: [0; 32],
            time: jiff::Timestamp::UNIX_EPOCH,
        };
        let event = Event::new(Action::CustomerUpdated).fields(["ada@example.com"]);
        let refused = event.unlinked().finish(&link).unwrap_err();
        assert!(refused.contains("15 characters refused"), "{refused}");
    }
}
