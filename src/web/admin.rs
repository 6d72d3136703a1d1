//! Admin pages: users, locations and integration tokens. Every change lands with its audit
//! entry, made by the signed-in admin from this request's address.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use tracing::info;

use crate::audit::{Action, Event};
use crate::auth::accounts::{LocationForm, NewUser, UserChange};
use crate::auth::sessions::SessionKey;
use crate::domain::Id;
use crate::domain::account::{ApiToken, Location, LocationKind, Role, SCOPES, User};

use super::AppState;
use super::account::{SessionRow, session_rows};
use super::error::WebError;
use super::guard::{SignedIn, redirect};
use super::parse_id;
use super::shell::Shell;
use super::signin::render;

/// Field errors of a form, shown next to each field.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<(String, String)>);

impl FieldErrors {
    #[must_use]
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, m)| m.as_str())
    }

    fn from_error(err: WebError) -> Result<Self, WebError> {
        match err {
            WebError::Invalid { field, message } => Ok(Self(vec![(field, message)])),
            other => Err(other),
        }
    }
}

// --- users ---

#[derive(Debug, Template)]
#[template(path = "admin/users.html")]
struct UsersPage {
    shell: Shell,
    users: Vec<User>,
    /// The last backup (scheduled or by hand), from the status file in the data folder.
    last_backup: Option<crate::backups::LastBackup>,
    backups_scheduled: bool,
}

/// `GET /admin/users`.
pub async fn users(state: web::Data<AppState>, who: SignedIn) -> Result<HttpResponse, WebError> {
    render(
        &UsersPage {
            shell: Shell::signed_in(&who, "Users", "/admin/users"),
            users: state.accounts.list()?,
            last_backup: crate::backups::read_status(&state.config.data_dir),
            backups_scheduled: state.config.backup.enabled,
        },
        StatusCode::OK,
    )
}

#[derive(Debug, Template)]
#[template(path = "admin/user_form.html")]
struct UserFormPage {
    shell: Shell,
    /// `None` for a new user.
    user: Option<User>,
    login: String,
    display_name: String,
    role: Role,
    stores: Vec<Id>,
    locations: Vec<Location>,
    roles: [Role; 4],
    errors: FieldErrors,
    sessions: Vec<SessionRow>,
    revoke_base: String,
}

/// Fields of the user form (read from pairs, since `stores` repeats).
#[derive(Debug, Default)]
pub struct UserForm {
    login: String,
    display_name: String,
    role: String,
    stores: Vec<String>,
}

impl UserForm {
    fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut form = Self::default();
        for (key, value) in pairs {
            match key.as_str() {
                "login" => form.login = value,
                "display_name" => form.display_name = value,
                "role" => form.role = value,
                "stores" => form.stores.push(value),
                _ => {}
            }
        }
        form
    }

    fn role(&self) -> Result<Role, WebError> {
        self.role.parse().map_err(|message| WebError::Invalid {
            field: "role".into(),
            message,
        })
    }

    fn stores(&self) -> Result<Vec<Id>, WebError> {
        self.stores
            .iter()
            .map(|s| {
                s.parse().map_err(|_| WebError::Invalid {
                    field: "stores".into(),
                    message: "unknown store".into(),
                })
            })
            .collect()
    }
}

/// The values shown in the user form.
type UserValues = (String, String, Role, Vec<Id>);

fn values_of(user: &User) -> UserValues {
    (
        user.login.clone(),
        user.display_name.clone(),
        user.role,
        user.stores.clone(),
    )
}

fn user_form(
    state: &AppState,
    who: &SignedIn,
    user: Option<User>,
    values: UserValues,
    errors: FieldErrors,
    status: StatusCode,
) -> Result<HttpResponse, WebError> {
    let (login, display_name, role, stores) = values;
    let sessions = match &user {
        Some(u) => session_rows(state, u.id, None)?,
        None => Vec::new(),
    };
    let revoke_base = user
        .as_ref()
        .map(|u| format!("/admin/users/{}/sessions/", u.id))
        .unwrap_or_default();
    let title = user
        .as_ref()
        .map_or_else(|| "New user".to_owned(), |u| format!("User {}", u.login));
    let page = UserFormPage {
        shell: Shell::signed_in(who, title, "/admin/users"),
        user,
        login,
        display_name,
        role,
        stores,
        locations: state.accounts.locations()?,
        roles: Role::ALL,
        errors,
        sessions,
        revoke_base,
    };
    render(&page, status)
}

/// `GET /admin/users/new`.
pub async fn new_user(state: web::Data<AppState>, who: SignedIn) -> Result<HttpResponse, WebError> {
    user_form(
        &state,
        &who,
        None,
        (String::new(), String::new(), Role::Associate, Vec::new()),
        FieldErrors::default(),
        StatusCode::OK,
    )
}

#[derive(Debug, Template)]
#[template(path = "admin/one_time_password.html")]
struct OneTimePasswordPage {
    shell: Shell,
    user: User,
    password: String,
}

/// `POST /admin/users`: creates a user with a one-time password, shown once.
pub async fn create_user(
    state: web::Data<AppState>,
    who: SignedIn,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, WebError> {
    let form = UserForm::from_pairs(form.into_inner());
    let attempt = async {
        let new = NewUser {
            login: form.login.clone(),
            display_name: form.display_name.clone(),
            role: form.role()?,
            stores: form.stores()?,
            password: None,
        };
        Ok::<_, WebError>(state.accounts.create(new, who.actor()).await?)
    };
    match attempt.await {
        Ok((user, Some(password))) => {
            info!(user = %user.id, by = %who.user.id, "user created");
            render(
                &OneTimePasswordPage {
                    shell: Shell::signed_in(&who, "User created", "/admin/users"),
                    user,
                    password,
                },
                StatusCode::OK,
            )
        }
        Ok((user, None)) => Ok(redirect(&format!("/admin/users/{}", user.id))),
        Err(err) => {
            let errors = FieldErrors::from_error(err)?;
            let values = (
                form.login.clone(),
                form.display_name.clone(),
                form.role().unwrap_or(Role::Associate),
                form.stores().unwrap_or_default(),
            );
            user_form(
                &state,
                &who,
                None,
                values,
                errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    }
}

/// `GET /admin/users/{id}`.
pub async fn edit_user(
    state: web::Data<AppState>,
    who: SignedIn,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let user = state
        .accounts
        .get(parse_id(&id)?)?
        .ok_or(WebError::NotFound)?;
    let values = values_of(&user);
    user_form(
        &state,
        &who,
        Some(user),
        values,
        FieldErrors::default(),
        StatusCode::OK,
    )
}

/// `POST /admin/users/{id}`: display name, role and stores.
pub async fn update_user(
    state: web::Data<AppState>,
    who: SignedIn,
    id: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, WebError> {
    let form = UserForm::from_pairs(form.into_inner());
    let mut user = state
        .accounts
        .get(parse_id(&id)?)?
        .ok_or(WebError::NotFound)?;
    let display_name = form.display_name.trim();
    let result = (|| {
        if display_name.is_empty() || display_name.chars().count() > 100 {
            return Err(WebError::Invalid {
                field: "display_name".into(),
                message: "use 1 to 100 characters".into(),
            });
        }
        Ok((form.role()?, form.stores()?))
    })();
    match result {
        Ok((role, stores)) => {
            if user.id == who.user.id && role != Role::Admin {
                let refused = Event::new(Action::UserRoleChanged)
                    .by(who.actor())
                    .target("user", user.id)
                    .fields(["role"])
                    .denied("an admin cannot remove their own admin role");
                state.audit.record(refused).await?;
                let errors = FieldErrors(vec![(
                    "role".into(),
                    "you cannot remove your own admin role".into(),
                )]);
                let values = values_of(&user);
                return user_form(
                    &state,
                    &who,
                    Some(user),
                    values,
                    errors,
                    StatusCode::UNPROCESSABLE_ENTITY,
                );
            }
            let change = UserChange {
                display_name: display_name.to_owned(),
                role,
                stores,
            };
            state
                .accounts
                .update(&mut user, change, who.actor())
                .await?;
            info!(user = %user.id, by = %who.user.id, "user updated");
            Ok(redirect(&format!("/admin/users/{}", user.id)))
        }
        Err(err) => {
            let values = (
                user.login.clone(),
                form.display_name.clone(),
                form.role().unwrap_or(user.role),
                form.stores().unwrap_or_default(),
            );
            user_form(
                &state,
                &who,
                Some(user),
                values,
                FieldErrors::from_error(err)?,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    }
}

/// `POST /admin/users/{id}/disable`: disabling ends every session of the user.
pub async fn disable_user(
    state: web::Data<AppState>,
    who: SignedIn,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let mut user = state
        .accounts
        .get(parse_id(&id)?)?
        .ok_or(WebError::NotFound)?;
    if user.id == who.user.id {
        let refused = Event::new(Action::UserDisabled)
            .by(who.actor())
            .target("user", user.id)
            .denied("an admin cannot disable their own account");
        state.audit.record(refused).await?;
        return Err(WebError::Forbidden(
            "you cannot disable your own account".into(),
        ));
    }
    state
        .accounts
        .set_disabled(&mut user, true, who.actor())
        .await?;
    let ended = state
        .sessions
        .end_all(user.id, None, &who.actor(), "account disabled")
        .await?;
    info!(user = %user.id, by = %who.user.id, sessions_ended = ended, "user disabled");
    Ok(redirect(&format!("/admin/users/{}", user.id)))
}

/// `POST /admin/users/{id}/enable`.
pub async fn enable_user(
    state: web::Data<AppState>,
    who: SignedIn,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let mut user = state
        .accounts
        .get(parse_id(&id)?)?
        .ok_or(WebError::NotFound)?;
    state
        .accounts
        .set_disabled(&mut user, false, who.actor())
        .await?;
    info!(user = %user.id, by = %who.user.id, "user enabled");
    Ok(redirect(&format!("/admin/users/{}", user.id)))
}

/// `POST /admin/users/{id}/reset-password`: a new one-time password, shown once; the user's
/// sessions end.
pub async fn reset_password(
    state: web::Data<AppState>,
    who: SignedIn,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let mut user = state
        .accounts
        .get(parse_id(&id)?)?
        .ok_or(WebError::NotFound)?;
    let password = state
        .accounts
        .reset_password(&mut user, who.actor())
        .await?;
    state
        .sessions
        .end_all(user.id, None, &who.actor(), "password reset")
        .await?;
    info!(user = %user.id, by = %who.user.id, "password reset");
    render(
        &OneTimePasswordPage {
            shell: Shell::signed_in(&who, "Password reset", "/admin/users"),
            user,
            password,
        },
        StatusCode::OK,
    )
}

/// `POST /admin/users/{id}/sessions/{handle}/revoke`.
pub async fn revoke_user_session(
    state: web::Data<AppState>,
    who: SignedIn,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, WebError> {
    let (id, handle) = path.into_inner();
    let user = parse_id(&id)?;
    let key = SessionKey::from_handle(&handle).ok_or(WebError::NotFound)?;
    if !state
        .sessions
        .of_user(user)?
        .into_iter()
        .any(|(k, _)| k == key)
    {
        return Err(WebError::NotFound);
    }
    let event = Event::new(Action::SessionRevoked)
        .by(who.actor())
        .target("session", key.handle())
        .reason(format!("session of user {user} ended by an administrator"));
    state.sessions.end(key, event).await?;
    info!(user = %user, by = %who.user.id, "session revoked");
    Ok(redirect(&format!("/admin/users/{user}")))
}

// --- locations ---

#[derive(Debug, Template)]
#[template(path = "admin/locations.html")]
struct LocationsPage {
    shell: Shell,
    locations: Vec<Location>,
}

/// `GET /admin/locations`.
pub async fn locations(
    state: web::Data<AppState>,
    who: SignedIn,
) -> Result<HttpResponse, WebError> {
    render(
        &LocationsPage {
            shell: Shell::signed_in(&who, "Locations", "/admin/locations"),
            locations: state.accounts.locations()?,
        },
        StatusCode::OK,
    )
}

#[derive(Debug, Template)]
#[template(path = "admin/location_form.html")]
struct LocationFormPage {
    shell: Shell,
    action: String,
    code: String,
    name: String,
    warehouse: bool,
    time_zone: String,
    country: String,
    currency: String,
    address: String,
    errors: FieldErrors,
}

fn location_form(
    who: &SignedIn,
    action: String,
    values: &LocationForm,
    errors: FieldErrors,
    status: StatusCode,
) -> Result<HttpResponse, WebError> {
    let page = LocationFormPage {
        shell: Shell::signed_in(
            who,
            if values.code.is_empty() {
                "New location".to_owned()
            } else {
                format!("Location {}", values.code)
            },
            "/admin/locations",
        ),
        action,
        code: values.code.clone(),
        name: values.name.clone(),
        warehouse: values.kind == LocationKind::Warehouse,
        time_zone: values.time_zone.clone(),
        country: values.country.clone(),
        currency: values.currency.clone(),
        address: values.address.clone(),
        errors,
    };
    render(&page, status)
}

/// `GET /admin/locations/new`.
pub async fn new_location(who: SignedIn) -> Result<HttpResponse, WebError> {
    let blank = LocationForm {
        code: String::new(),
        name: String::new(),
        kind: LocationKind::Store,
        time_zone: "UTC".into(),
        country: String::new(),
        currency: String::new(),
        address: String::new(),
    };
    location_form(
        &who,
        "/admin/locations".into(),
        &blank,
        FieldErrors::default(),
        StatusCode::OK,
    )
}

/// `POST /admin/locations`.
pub async fn create_location(
    state: web::Data<AppState>,
    who: SignedIn,
    form: web::Form<LocationForm>,
) -> Result<HttpResponse, WebError> {
    match state
        .accounts
        .save_location(None, form.0.clone(), who.actor())
        .await
    {
        Ok(location) => {
            info!(location = %location.id, by = %who.user.id, "location created");
            Ok(redirect("/admin/locations"))
        }
        Err(err) => location_form(
            &who,
            "/admin/locations".into(),
            &form,
            FieldErrors::from_error(err.into())?,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    }
}

/// `GET /admin/locations/{id}`.
pub async fn edit_location(
    state: web::Data<AppState>,
    who: SignedIn,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let location = state
        .accounts
        .location(parse_id(&id)?)?
        .ok_or(WebError::NotFound)?;
    let values = LocationForm {
        code: location.code,
        name: location.name,
        kind: location.kind,
        time_zone: location.time_zone,
        country: location.country,
        currency: location.currency,
        address: location.address,
    };
    location_form(
        &who,
        format!("/admin/locations/{}", location.id),
        &values,
        FieldErrors::default(),
        StatusCode::OK,
    )
}

/// `POST /admin/locations/{id}`.
pub async fn update_location(
    state: web::Data<AppState>,
    who: SignedIn,
    id: web::Path<String>,
    form: web::Form<LocationForm>,
) -> Result<HttpResponse, WebError> {
    let location = state
        .accounts
        .location(parse_id(&id)?)?
        .ok_or(WebError::NotFound)?;
    let action = format!("/admin/locations/{}", location.id);
    match state
        .accounts
        .save_location(Some(location), form.0.clone(), who.actor())
        .await
    {
        Ok(location) => {
            info!(location = %location.id, by = %who.user.id, "location updated");
            Ok(redirect("/admin/locations"))
        }
        Err(err) => location_form(
            &who,
            action,
            &form,
            FieldErrors::from_error(err.into())?,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    }
}

// --- tokens ---

/// A token as listed.
#[derive(Debug)]
pub struct TokenRow {
    pub token: ApiToken,
    pub last_used: String,
}

#[derive(Debug, Template)]
#[template(path = "admin/tokens.html")]
struct TokensPage {
    shell: Shell,
    tokens: Vec<TokenRow>,
    scopes: &'static [(&'static str, &'static str)],
    locations: Vec<Location>,
    created: Option<(String, String)>,
    errors: FieldErrors,
}

fn tokens_page(
    state: &AppState,
    who: &SignedIn,
    created: Option<(String, String)>,
    errors: FieldErrors,
    status: StatusCode,
) -> Result<HttpResponse, WebError> {
    let tokens = state
        .tokens
        .list()?
        .into_iter()
        .map(|(token, last)| TokenRow {
            token,
            last_used: last.map_or_else(
                || "not since start".to_owned(),
                |t| t.strftime("%Y-%m-%d %H:%M UTC").to_string(),
            ),
        })
        .collect();
    let page = TokensPage {
        shell: Shell::signed_in(who, "Integration tokens", "/admin/tokens"),
        tokens,
        scopes: SCOPES,
        locations: state.accounts.locations()?,
        created,
        errors,
    };
    render(&page, status)
}

/// `GET /admin/tokens`.
pub async fn tokens(state: web::Data<AppState>, who: SignedIn) -> Result<HttpResponse, WebError> {
    tokens_page(&state, &who, None, FieldErrors::default(), StatusCode::OK)
}

/// `POST /admin/tokens`: the secret is shown on this answer only.
pub async fn create_token(
    state: web::Data<AppState>,
    who: SignedIn,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, WebError> {
    let pairs = form.into_inner();
    let field = |name: &str| {
        pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    let name = field("name").pop().unwrap_or_default();
    let stores: Result<Vec<Id>, WebError> = field("stores").iter().map(|s| parse_id(s)).collect();
    match state
        .tokens
        .create(&name, field("scopes"), stores?, who.user.id, who.actor())
        .await
    {
        Ok((token, secret)) => {
            info!(token = %token.id, by = %who.user.id, "integration token created");
            tokens_page(
                &state,
                &who,
                Some((token.name, secret)),
                FieldErrors::default(),
                StatusCode::OK,
            )
        }
        Err(err) => tokens_page(
            &state,
            &who,
            None,
            FieldErrors::from_error(err.into())?,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    }
}

/// `POST /admin/tokens/{id}/revoke`.
pub async fn revoke_token(
    state: web::Data<AppState>,
    who: SignedIn,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    if !state.tokens.revoke(parse_id(&id)?, who.actor()).await? {
        return Err(WebError::NotFound);
    }
    info!(token = %id, by = %who.user.id, "integration token revoked");
    Ok(redirect("/admin/tokens"))
}
