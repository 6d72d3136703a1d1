//! Staff accounts and locations: creation, look-up by login, password changes and sign-in.

use std::sync::Arc;

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

/// The result of a sign-in attempt.
#[derive(Debug)]
pub enum SignIn {
    Ok(Box<User>),
    /// Wrong login or password (the same answer for both).
    Refused,
    /// The account exists but is disabled (answered like `Refused` to the client).
    Disabled,
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

    /// Creates an account; returns it and the one-time password when one was made.
    pub async fn create(&self, new: NewUser) -> Result<(User, Option<String>), AuthError> {
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
        match self.store.commit(set).await {
            Ok(()) => Ok((user, one_time)),
            Err(StoreError::Conflict { .. }) => Err(AuthError::Invalid {
                field: "login",
                message: format!("the login `{}` is already taken", user.login),
            }),
            Err(err) => Err(err.into()),
        }
    }

    /// Writes a changed account.
    pub async fn save(&self, user: &mut User) -> Result<(), AuthError> {
        user.updated_at = self.clock.now();
        let mut set = ChangeSet::new();
        set.put(USERS, user.id.to_bytes().to_vec(), Store::json(user)?);
        Ok(self.store.commit(set).await?)
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
            return Ok(SignIn::Refused);
        };
        if !ok {
            return Ok(SignIn::Refused);
        }
        if user.disabled {
            return Ok(SignIn::Disabled);
        }
        if needs_rehash && let Some(password) = password {
            user.password_hash = self.hash(password).await?;
            self.save(&mut user).await?;
        }
        Ok(SignIn::Ok(Box::new(user)))
    }

    /// Sets a new password chosen by the user (policy applies) and clears the forced change.
    pub async fn change_password(
        &self,
        user: &mut User,
        new_password: &str,
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
        self.save(user).await
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

    /// An admin reset: a new one-time password, to be changed at the next sign-in.
    pub async fn reset_password(&self, user: &mut User) -> Result<String, AuthError> {
        let one_time = one_time_password(self.random.as_ref())?;
        user.password_hash = self.hash(one_time.clone()).await?;
        user.must_change_password = true;
        self.save(user).await?;
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

    /// Creates or updates a location after validating every field.
    pub async fn save_location(
        &self,
        existing: Option<Location>,
        form: LocationForm,
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
        let location = match existing {
            Some(old) => {
                if old.code != code {
                    set.delete(LOCATION_CODES, old.code.as_bytes().to_vec());
                    set.insert_new(
                        LOCATION_CODES,
                        code.as_bytes().to_vec(),
                        old.id.to_bytes().to_vec(),
                    );
                }
                Location {
                    code,
                    name,
                    kind: form.kind,
                    time_zone: form.time_zone.trim().into(),
                    country,
                    currency,
                    address: form.address.trim().into(),
                    updated_at: now,
                    ..old
                }
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
                location
            }
        };
        set.put(
            LOCATIONS,
            location.id.to_bytes().to_vec(),
            Store::json(&location)?,
        );
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
