//! Staff accounts and locations: creation, look-up by login, password changes and sign-in.
//!
//! Every write takes the [`Actor`] who asked for it (or the [`Event`] to record) and puts the
//! audit entry in the same change set, so the change and its entry land together or not at all.

use std::sync::Arc;

use crate::audit::{Action, Actor, Event};
use crate::clock::{Clock, Random};
use crate::domain::Id;
use crate::domain::account::{Location, LocationKind, Role, User};
use crate::store::{ChangeSet, Store, StoreError, Table};

use super::AuthError;
use super::password::{self, HashLimiter, PasswordHasher};

pub const USERS: Table = Table::new("users");
/// Blind index of the lower-case login → user id.
pub const USER_LOGINS: Table = Table::new("user_logins");
pub const LOCATIONS: Table = Table::new("locations");
/// Upper-case location code → location id.
pub const LOCATION_CODES: Table = Table::new("location_codes");

/// Account services.
#[derive(Debug, Clone)]
pub struct Accounts {
    store: Store,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    hasher: Arc<PasswordHasher>,
    limiter: Arc<HashLimiter>,
}

/// A new account.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub login: String,
    pub display_name: String,
    pub role: Role,
    pub stores: Vec<Id>,
    /// A chosen password; when `None`, a one-time password is made and must be changed at the
    /// first sign-in.
    pub password: Option<String>,
}

/// The result of a sign-in attempt. The client gets the same answer for every refusal; the
/// audit trail tells them apart.
#[derive(Debug)]
pub enum SignIn {
    Ok(Box<User>),
    /// No account has this login.
    UnknownLogin,
    /// The account exists and the password is wrong.
    WrongPassword(Box<User>),
    /// The password is right but the account is disabled.
    Disabled(Box<User>),
}

/// An admin's change to an account's name, role and stores.
#[derive(Debug, Clone)]
pub struct UserChange {
    pub display_name: String,
    pub role: Role,
    pub stores: Vec<Id>,
}

impl Accounts {
    #[must_use]
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
        hasher: Arc<PasswordHasher>,
        limiter: Arc<HashLimiter>,
    ) -> Self {
        Self {
            store,
            clock,
            random,
            hasher,
            limiter,
        }
    }

    #[must_use]
    pub fn limiter(&self) -> &HashLimiter {
        &self.limiter
    }

    fn login_key(&self, login: &str) -> [u8; 16] {
        self.store
            .blind_index("login", &login.trim().to_lowercase())
    }

    pub fn get(&self, id: Id) -> Result<Option<User>, AuthError> {
        Ok(self.store.get_json(USERS, &id.to_bytes())?)
    }

    pub fn find_by_login(&self, login: &str) -> Result<Option<User>, AuthError> {
        let Some(id) = self.store.get(USER_LOGINS, &self.login_key(login))? else {
            return Ok(None);
        };
        let id: [u8; 16] = id
            .as_slice()
            .try_into()
            .map_err(|_| AuthError::Store(StoreError::Decode("user login index".into())))?;
        self.get(Id::from_bytes(id))
    }

    pub fn list(&self) -> Result<Vec<User>, AuthError> {
        let mut users: Vec<User> = self
            .store
            .scan_json(USERS)?
            .into_iter()
            .map(|(_, u)| u)
            .collect();
        users.sort_by(|a, b| a.login.cmp(&b.login));
        Ok(users)
    }

    /// Whether any account exists (the first one is made by `init`).
    #[must_use]
    pub fn any(&self) -> bool {
        self.store.count(USERS) > 0
    }

    /// Creates an account; returns it and the one-time password when one was made. The
    /// `user.created` entry by `actor` lands with it.
    pub async fn create(
        &self,
        new: NewUser,
        actor: Actor,
    ) -> Result<(User, Option<String>), AuthError> {
        let login = validate_login(&new.login)?;
        let display_name = required("display_name", &new.display_name, 100)?;
        let (password, one_time) = match new.password {
            Some(password) => {
                password::check_policy(&password, &[&login, &display_name])?;
                (password, None)
            }
            None => {
                let one_time = one_time_password(self.random.as_ref())?;
                (one_time.clone(), Some(one_time))
            }
        };
        let hash = self.hash(password).await?;
        let now = self.clock.now();
        let user = User {
            id: self.new_id()?,
            login,
            display_name,
            role: new.role,
            stores: new.stores,
            password_hash: hash,
            must_change_password: one_time.is_some(),
            disabled: false,
            totp_secret: None,
            totp_last_step: None,
            recovery_codes: Vec::new(),
            created_at: now,
            updated_at: now,
        };
        let mut set = ChangeSet::new();
        set.insert_new(
            USER_LOGINS,
            self.login_key(&user.login).to_vec(),
            user.id.to_bytes().to_vec(),
        );
        set.insert_new(USERS, user.id.to_bytes().to_vec(), Store::json(&user)?);
        Event::new(Action::UserCreated)
            .by(actor)
            .target("user", user.id)
            .fields(["login", "display_name", "role", "stores", "password"])
            .add_to(&mut set);
        match self.store.commit(set).await {
            Ok(()) => Ok((user, one_time)),
            Err(StoreError::Conflict { .. }) => Err(AuthError::Invalid {
                field: "login",
                message: format!("the login `{}` is already taken", user.login),
            }),
            Err(err) => Err(err.into()),
        }
    }

    /// Writes a changed account with the audit entries that describe the change.
    pub async fn save(&self, user: &mut User, events: Vec<Event>) -> Result<(), AuthError> {
        user.updated_at = self.clock.now();
        let mut set = ChangeSet::new();
        set.put(USERS, user.id.to_bytes().to_vec(), Store::json(user)?);
        for event in events {
            event.add_to(&mut set);
        }
        Ok(self.store.commit(set).await?)
    }

    /// Applies an admin's change of name, role and stores. The entry lists the names of the
    /// fields that changed (none when the form was saved unchanged); a role change is recorded
    /// as `user.role_changed`.
    pub async fn update(
        &self,
        user: &mut User,
        change: UserChange,
        actor: Actor,
    ) -> Result<(), AuthError> {
        let display_name = required("display_name", &change.display_name, 100)?;
        let mut fields = Vec::new();
        if user.display_name != display_name {
            fields.push("display_name");
        }
        if user.role != change.role {
            fields.push("role");
        }
        if user.stores != change.stores {
            fields.push("stores");
        }
        let action = if user.role == change.role {
            Action::UserUpdated
        } else {
            Action::UserRoleChanged
        };
        user.display_name = display_name;
        user.role = change.role;
        user.stores = change.stores;
        let event = Event::new(action)
            .by(actor)
            .target("user", user.id)
            .fields(fields);
        self.save(user, vec![event]).await
    }

    /// Disables or enables an account (`user.disabled` / `user.enabled`).
    pub async fn set_disabled(
        &self,
        user: &mut User,
        disabled: bool,
        actor: Actor,
    ) -> Result<(), AuthError> {
        user.disabled = disabled;
        let action = if disabled {
            Action::UserDisabled
        } else {
            Action::UserEnabled
        };
        let event = Event::new(action)
            .by(actor)
            .target("user", user.id)
            .fields(["disabled"]);
        self.save(user, vec![event]).await
    }

    /// Checks a login and password. Unknown logins cost the same as known ones, and a
    /// password hash made with older parameters is upgraded.
    pub async fn sign_in(&self, login: &str, password: &str) -> Result<SignIn, AuthError> {
        let user = self.find_by_login(login)?;
        let hasher = Arc::clone(&self.hasher);
        let password = password.to_owned();
        let phc = user.as_ref().map(|u| u.password_hash.clone());
        let verified = self
            .limiter
            .run_hash(move || match phc {
                Some(phc) => hasher
                    .verify(&password, &phc)
                    .map(|v| (v.ok, v.needs_rehash, Some(password))),
                None => {
                    hasher.dummy_verify(&password);
                    Ok((false, false, None))
                }
            })
            .await
            .map_err(|_| AuthError::Busy)??;
        let (ok, needs_rehash, password) = verified;
        let Some(mut user) = user else {
            return Ok(SignIn::UnknownLogin);
        };
        if !ok {
            return Ok(SignIn::WrongPassword(Box::new(user)));
        }
        if user.disabled {
            return Ok(SignIn::Disabled(Box::new(user)));
        }
        if needs_rehash && let Some(password) = password {
            // The same password under newer parameters: no credential changed, nothing to
            // record.
            user.password_hash = self.hash(password).await?;
            self.save(&mut user, Vec::new()).await?;
        }
        Ok(SignIn::Ok(Box::new(user)))
    }

    /// Sets a new password chosen by the user (policy applies) and clears the forced change;
    /// the `auth.password_changed` entry by `actor` lands with it.
    pub async fn change_password(
        &self,
        user: &mut User,
        new_password: &str,
        actor: Actor,
    ) -> Result<(), AuthError> {
        password::check_policy(new_password, &[&user.login, &user.display_name])?;
        if self.check_password(user, new_password).await? {
            return Err(AuthError::Invalid {
                field: "new_password",
                message: "choose a password different from the current one".into(),
            });
        }
        user.password_hash = self.hash(new_password.to_owned()).await?;
        user.must_change_password = false;
        let event = Event::new(Action::PasswordChanged)
            .by(actor)
            .target("user", user.id)
            .fields(["password"]);
        self.save(user, vec![event]).await
    }

    /// Checks the current password of a signed-in user (for changing it).
    pub async fn check_password(&self, user: &User, password: &str) -> Result<bool, AuthError> {
        let hasher = Arc::clone(&self.hasher);
        let password = password.to_owned();
        let phc = user.password_hash.clone();
        let verified = self
            .limiter
            .run_hash(move || hasher.verify(&password, &phc))
            .await
            .map_err(|_| AuthError::Busy)??;
        Ok(verified.ok)
    }

    /// An admin reset: a new one-time password, to be changed at the next sign-in; the
    /// `auth.password_reset` entry by `actor` lands with it.
    pub async fn reset_password(&self, user: &mut User, actor: Actor) -> Result<String, AuthError> {
        let one_time = one_time_password(self.random.as_ref())?;
        user.password_hash = self.hash(one_time.clone()).await?;
        user.must_change_password = true;
        let event = Event::new(Action::PasswordReset)
            .by(actor)
            .target("user", user.id)
            .fields(["password", "must_change_password"]);
        self.save(user, vec![event]).await?;
        Ok(one_time)
    }

    async fn hash(&self, password: String) -> Result<String, AuthError> {
        let hasher = Arc::clone(&self.hasher);
        let random = Arc::clone(&self.random);
        self.limiter
            .run_hash(move || hasher.hash(&password, random.as_ref()))
            .await
            .map_err(|_| AuthError::Busy)?
            .map_err(AuthError::from)
    }

    fn new_id(&self) -> Result<Id, AuthError> {
        new_id(self.clock.as_ref(), self.random.as_ref())
    }

    // --- locations ---

    pub fn locations(&self) -> Result<Vec<Location>, AuthError> {
        let mut out: Vec<Location> = self
            .store
            .scan_json(LOCATIONS)?
            .into_iter()
            .map(|(_, l)| l)
            .collect();
        out.sort_by(|a, b| a.code.cmp(&b.code));
        Ok(out)
    }

    pub fn location(&self, id: Id) -> Result<Option<Location>, AuthError> {
        Ok(self.store.get_json(LOCATIONS, &id.to_bytes())?)
    }

    /// Creates or updates a location after validating every field; the `location.created` or
    /// `location.updated` entry by `actor`, naming the fields that changed, lands with it.
    pub async fn save_location(
        &self,
        existing: Option<Location>,
        form: LocationForm,
        actor: Actor,
    ) -> Result<Location, AuthError> {
        let code = form.code.trim().to_uppercase();
        if code.is_empty()
            || code.len() > 16
            || !code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(invalid(
                "code",
                "use 1 to 16 letters, digits or dashes, for example S001",
            ));
        }
        let name = required("name", &form.name, 100)?;
        if jiff::tz::TimeZone::get(form.time_zone.trim()).is_err() {
            return Err(invalid(
                "time_zone",
                "not a known IANA time zone, for example Europe/Paris",
            ));
        }
        let country = form.country.trim().to_uppercase();
        if country.len() != 2 || !country.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(invalid(
                "country",
                "use the two-letter ISO 3166 code, for example FR",
            ));
        }
        let currency = form.currency.trim().to_uppercase();
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(invalid(
                "currency",
                "use the three-letter ISO 4217 code, for example EUR",
            ));
        }
        let now = self.clock.now();
        let mut set = ChangeSet::new();
        let (location, action, fields) = match existing {
            Some(old) => {
                if old.code != code {
                    set.delete(LOCATION_CODES, old.code.as_bytes().to_vec());
                    set.insert_new(
                        LOCATION_CODES,
                        code.as_bytes().to_vec(),
                        old.id.to_bytes().to_vec(),
                    );
                }
                let new = Location {
                    code,
                    name,
                    kind: form.kind,
                    time_zone: form.time_zone.trim().into(),
                    country,
                    currency,
                    address: form.address.trim().into(),
                    updated_at: now,
                    ..old.clone()
                };
                let fields = changed_location_fields(&old, &new);
                (new, Action::LocationUpdated, fields)
            }
            None => {
                let location = Location {
                    id: self.new_id()?,
                    code,
                    name,
                    kind: form.kind,
                    time_zone: form.time_zone.trim().into(),
                    country,
                    currency,
                    address: form.address.trim().into(),
                    created_at: now,
                    updated_at: now,
                };
                set.insert_new(
                    LOCATION_CODES,
                    location.code.as_bytes().to_vec(),
                    location.id.to_bytes().to_vec(),
                );
                (location, Action::LocationCreated, LOCATION_FIELDS.to_vec())
            }
        };
        set.put(
            LOCATIONS,
            location.id.to_bytes().to_vec(),
            Store::json(&location)?,
        );
        Event::new(action)
            .by(actor)
            .target("location", location.id)
            .fields(fields)
            .store(location.id)
            .add_to(&mut set);
        match self.store.commit(set).await {
            Ok(()) => Ok(location),
            Err(StoreError::Conflict { .. }) => {
                Err(invalid("code", "another location already uses this code"))
            }
            Err(err) => Err(err.into()),
        }
    }
}

/// Fields of the location form.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct LocationForm {
    pub code: String,
    pub name: String,
    pub kind: LocationKind,
    pub time_zone: String,
    pub country: String,
    pub currency: String,
    #[serde(default)]
    pub address: String,
}

/// The fields of a location, as named in audit entries.
const LOCATION_FIELDS: &[&str] = &[
    "code",
    "name",
    "kind",
    "time_zone",
    "country",
    "currency",
    "address",
];

/// Names of the fields that differ between two versions of a location.
fn changed_location_fields(old: &Location, new: &Location) -> Vec<&'static str> {
    let same = [
        old.code == new.code,
        old.name == new.name,
        old.kind == new.kind,
        old.time_zone == new.time_zone,
        old.country == new.country,
        old.currency == new.currency,
        old.address == new.address,
    ];
    LOCATION_FIELDS
        .iter()
        .zip(same)
        .filter(|(_, same)| !same)
        .map(|(name, _)| *name)
        .collect()
}

/// A new id from the injected clock and random source.
pub fn new_id(clock: &dyn Clock, random: &dyn Random) -> Result<Id, AuthError> {
    let mut bytes = [0u8; 10];
    random
        .fill(&mut bytes)
        .map_err(|_| AuthError::Store(StoreError::Crypto("random source failed")))?;
    Ok(Id::from_parts(clock.now(), bytes))
}

fn invalid(field: &'static str, message: &str) -> AuthError {
    AuthError::Invalid {
        field,
        message: message.into(),
    }
}

fn required(field: &'static str, value: &str, max: usize) -> Result<String, AuthError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(field, "this field is required"));
    }
    if value.chars().count() > max {
        return Err(AuthError::Invalid {
            field,
            message: format!("use at most {max} characters"),
        });
    }
    Ok(value.to_owned())
}

fn validate_login(login: &str) -> Result<String, AuthError> {
    let login = login.trim().to_lowercase();
    let valid = (2..=64).contains(&login.len())
        && login
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if !valid {
        return Err(invalid(
            "login",
            "use 2 to 64 letters, digits, dots, dashes, underscores or @",
        ));
    }
    Ok(login)
}

/// A one-time password: 20 random characters from an unambiguous alphabet, in groups of five.
pub fn one_time_password(random: &dyn Random) -> Result<String, AuthError> {
    const ALPHABET: &[u8; 32] = b"abcdefghjkmnpqrstuvwxyz234567890";
    let mut bytes = [0u8; 20];
    random
        .fill(&mut bytes)
        .map_err(|_| AuthError::Store(StoreError::Crypto("random source failed")))?;
    let mut out = String::with_capacity(23);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % 5 == 0 {
            out.push('-');
        }
        out.push(char::from(ALPHABET[usize::from(*b & 31)]));
    }
    Ok(out)
}
