//! The Sync page: every connector with its last run, last success, lag, items and last error
//! in words; a connector's page with its schedule, dead letters and recently processed files;
//! a dead letter's page with its reason and contents. Admins run a connector now, pause and
//! resume it, and replay or discard a dead letter; managers see the health lines. Each of
//! those actions, and each opening of a dead letter's contents, is audited.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use jiff::Timestamp;
use serde::Deserialize;

use crate::domain::account::Role;
use crate::sync::held::{Archived, DeadLetter};
use crate::sync::push::PushView;
use crate::sync::{ConnectorView, Replay, SyncError};

use super::error::WebError;
use super::guard::{Principal, SignedIn, redirect};
use super::shell::Shell;
use super::signin::render;
use super::{AppState, parse_id};

/// How much of a dead letter's contents the page shows.
const SHOWN_BYTES: usize = 512 * 1024;

/// Recently processed files listed on a connector's page.
const RECENT_FILES: usize = 50;

impl From<SyncError> for WebError {
    fn from(err: SyncError) -> Self {
        match err {
            SyncError::UnknownConnector(_) | SyncError::UnknownDeadLetter => Self::NotFound,
            SyncError::Failed(message) => Self::Conflict(message),
            SyncError::Store(err) => Self::Store(err),
        }
    }
}

/// "3 min ago", "in 5 s", "never".
fn ago(now: Timestamp, at: Option<Timestamp>) -> String {
    let Some(at) = at else {
        return "never".to_owned();
    };
    let span = now.duration_since(at);
    let secs = span.as_secs().unsigned_abs();
    let words = if secs < 1 {
        "now".to_owned()
    } else {
        humantime::format_duration(Duration::from_secs(secs)).to_string()
    };
    if words == "now" {
        words
    } else if span.is_negative() {
        format!("in {words}")
    } else {
        format!("{words} ago")
    }
}

fn duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
    ))
    .to_string()
}

/// One connector's line.
#[derive(Debug)]
struct Row {
    name: String,
    kind: &'static str,
    status: &'static str,
    /// CSS class of the status badge.
    tone: &'static str,
    last_run: String,
    last_success: String,
    next_run: String,
    lag: String,
    items_total: u64,
    last_items: u64,
    last_error: Option<String>,
    dead_letters: usize,
    interval: String,
    paused: bool,
}

fn row(view: &ConnectorView, now: Timestamp) -> Row {
    let state = &view.state;
    let (status, tone) = if view.running {
        ("running", "ok")
    } else if state.paused {
        ("paused", "warn")
    } else if state.failures > 0 {
        ("retrying", "danger")
    } else if state.last_run_at.is_none() {
        ("waiting", "muted")
    } else {
        ("healthy", "ok")
    };
    Row {
        name: view.config.name.clone(),
        kind: view.config.kind.label(),
        status,
        tone,
        last_run: ago(now, state.last_run_at),
        last_success: ago(now, state.last_success_at),
        next_run: if state.paused {
            "paused".to_owned()
        } else {
            ago(now, view.next_run_at)
        },
        lag: match view.lag(now) {
            Some(lag) => format!("{} file(s), oldest {}", state.waiting, duration(lag)),
            None => "none".to_owned(),
        },
        items_total: state.items_total,
        last_items: state.last_items,
        last_error: state.last_error.clone(),
        dead_letters: view.dead_letters,
        interval: duration(view.interval_now),
        paused: state.paused,
    }
}

/// A dead letter's line.
#[derive(Debug)]
struct LetterRow {
    id: String,
    connector: String,
    name: String,
    size: u64,
    received: String,
    reason: String,
    attempts: u32,
}

fn letter_row(letter: &DeadLetter, now: Timestamp) -> LetterRow {
    LetterRow {
        id: letter.id.to_string(),
        connector: letter.connector.clone(),
        name: letter.name.clone(),
        size: letter.size,
        received: ago(now, Some(letter.received_at)),
        reason: letter.reason.clone(),
        attempts: letter.attempts,
    }
}

/// Flash messages after an action, by the code the action redirects with.
#[derive(Debug, Deserialize)]
pub struct Done {
    done: Option<String>,
}

impl Done {
    fn flash(&self) -> Option<(&'static str, &'static str)> {
        Some(match self.done.as_deref()? {
            "run" => ("ok", "Run started; the figures below update when it ends."),
            "paused" => (
                "ok",
                "Connector paused: it runs again only when resumed or run by hand.",
            ),
            "resumed" => ("ok", "Connector resumed."),
            "replayed" => (
                "ok",
                "Dead letter replayed: its transactions were imported.",
            ),
            "refused" => (
                "error",
                "The replay was refused again; the new reason is below.",
            ),
            "discarded" => ("ok", "Dead letter discarded with its contents."),
            _ => return None,
        })
    }
}

fn shell(who: &SignedIn, title: impl Into<String>, done: &Done) -> Shell {
    let shell = Shell::signed_in(who, title, "/sync");
    match done.flash() {
        Some((kind, text)) => shell.with_flash(kind, text),
        None => shell,
    }
}

/// A push connector's line.
#[derive(Debug)]
struct PushRow {
    name: &'static str,
    kind: &'static str,
    last_received: String,
    last_success: String,
    requests: u64,
    items: u64,
    refused: u64,
    last_error: Option<String>,
}

fn push_row(view: &PushView, now: Timestamp) -> PushRow {
    let health = &view.health;
    PushRow {
        name: view.name,
        kind: view.kind,
        last_received: ago(now, health.last_received_at),
        last_success: ago(now, health.last_success_at),
        requests: health.requests,
        items: health.items,
        refused: health.refused,
        last_error: health
            .last_error
            .as_ref()
            .map(|error| format!("{error} ({})", ago(now, health.last_error_at))),
    }
}

#[derive(Debug, Template)]
#[template(path = "sync/index.html")]
struct IndexPage {
    shell: Shell,
    rows: Vec<Row>,
    pushes: Vec<PushRow>,
    letters: Vec<LetterRow>,
    can_act: bool,
    keep_processed: String,
}

/// `GET /sync`.
pub async fn index(
    state: web::Data<AppState>,
    who: SignedIn,
    done: web::Query<Done>,
) -> Result<HttpResponse, WebError> {
    let sync = state.sync.clone();
    let (views, letters) =
        web::block(move || Ok::<_, SyncError>((sync.connectors()?, sync.held().dead_letters()?)))
            .await
            .map_err(|e| WebError::Internal(e.to_string()))??;
    let now = state.clock.now();
    render(
        &IndexPage {
            shell: shell(&who, "Sync", &done),
            rows: views.iter().map(|v| row(v, now)).collect(),
            pushes: state
                .sync
                .push()
                .views()
                .iter()
                .map(|v| push_row(v, now))
                .collect(),
            letters: letters.iter().map(|l| letter_row(l, now)).collect(),
            can_act: who.user.role == Role::Admin,
            keep_processed: duration(state.config.sync.keep_processed),
        },
        StatusCode::OK,
    )
}

#[derive(Debug, Template)]
#[template(path = "sync/connector.html")]
struct ConnectorPage {
    shell: Shell,
    row: Row,
    view: ConnectorView,
    folder: String,
    base_interval: String,
    peaks: Vec<String>,
    time_zone: String,
    cursor: String,
    runs: u64,
    letters: Vec<LetterRow>,
    files: Vec<FileRow>,
    can_act: bool,
}

#[derive(Debug)]
struct FileRow {
    name: String,
    size: u64,
    received: String,
    accepted: u64,
    duplicates: u64,
}

fn file_row(file: &Archived, now: Timestamp) -> FileRow {
    FileRow {
        name: file.name.clone(),
        size: file.size,
        received: ago(now, Some(file.received_at)),
        accepted: file.accepted,
        duplicates: file.duplicates,
    }
}

/// `GET /sync/connectors/{name}`.
pub async fn connector(
    state: web::Data<AppState>,
    who: SignedIn,
    name: web::Path<String>,
    done: web::Query<Done>,
) -> Result<HttpResponse, WebError> {
    let sync = state.sync.clone();
    let name = name.into_inner();
    let (view, letters, files) = web::block(move || {
        let view = sync.connector(&name)?;
        let letters: Vec<DeadLetter> = sync
            .held()
            .dead_letters()?
            .into_iter()
            .filter(|l| l.connector == name)
            .collect();
        let files = sync.held().archived(&name, RECENT_FILES)?;
        Ok::<_, SyncError>((view, letters, files))
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))??;
    let now = state.clock.now();
    let config = &view.config;
    render(
        &ConnectorPage {
            shell: shell(&who, format!("Connector {}", config.name), &done),
            row: row(&view, now),
            folder: config
                .folder
                .as_ref()
                .map_or_else(String::new, |f| f.display().to_string()),
            base_interval: duration(config.interval),
            peaks: config.peak.iter().map(ToString::to_string).collect(),
            time_zone: config.time_zone.clone().unwrap_or_else(|| "UTC".to_owned()),
            cursor: view
                .state
                .cursor
                .clone()
                .unwrap_or_else(|| "none yet".to_owned()),
            runs: view.state.runs,
            letters: letters.iter().map(|l| letter_row(l, now)).collect(),
            files: files.iter().map(|f| file_row(f, now)).collect(),
            can_act: who.user.role == Role::Admin,
            view,
        },
        StatusCode::OK,
    )
}

/// `POST /sync/connectors/{name}/run`.
pub async fn run_now(
    state: web::Data<AppState>,
    who: SignedIn,
    name: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    state.sync.run_now(&name, who.actor()).await?;
    Ok(redirect(&format!("/sync/connectors/{name}?done=run")))
}

/// `POST /sync/connectors/{name}/pause`.
pub async fn pause(
    state: web::Data<AppState>,
    who: SignedIn,
    name: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    state.sync.set_paused(&name, true, who.actor()).await?;
    Ok(redirect(&format!("/sync/connectors/{name}?done=paused")))
}

/// `POST /sync/connectors/{name}/resume`.
pub async fn resume(
    state: web::Data<AppState>,
    who: SignedIn,
    name: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    state.sync.set_paused(&name, false, who.actor()).await?;
    Ok(redirect(&format!("/sync/connectors/{name}?done=resumed")))
}

#[derive(Debug, Template)]
#[template(path = "sync/dead_letter.html")]
struct LetterPage {
    shell: Shell,
    letter: LetterRow,
    digest: String,
    contents: String,
    cut: bool,
}

/// `GET /sync/dead-letters/{id}`: an audited read of the contents.
pub async fn dead_letter(
    state: web::Data<AppState>,
    who: SignedIn,
    id: web::Path<String>,
    done: web::Query<Done>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&id)?;
    let (letter, bytes) = state.sync.read_dead_letter(id, who.actor()).await?;
    let cut = bytes.len() > SHOWN_BYTES;
    let shown = &bytes[..bytes.len().min(SHOWN_BYTES)];
    render(
        &LetterPage {
            shell: shell(&who, format!("Dead letter {}", letter.name), &done),
            letter: letter_row(&letter, state.clock.now()),
            digest: letter.digest.clone(),
            contents: String::from_utf8_lossy(shown).into_owned(),
            cut,
        },
        StatusCode::OK,
    )
}

/// `POST /sync/dead-letters/{id}/replay`.
pub async fn replay(
    state: web::Data<AppState>,
    who: SignedIn,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&id)?;
    let letter = state
        .sync
        .held()
        .dead_letter(id)?
        .ok_or(WebError::NotFound)?;
    match state.sync.replay(id, who.actor()).await? {
        Replay::Imported(_) => Ok(redirect(&format!(
            "/sync/connectors/{}?done=replayed",
            letter.connector
        ))),
        Replay::Refused(_) => Ok(redirect(&format!("/sync/dead-letters/{id}?done=refused"))),
    }
}

/// `POST /sync/dead-letters/{id}/discard`.
pub async fn discard(
    state: web::Data<AppState>,
    who: SignedIn,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let id = parse_id(&id)?;
    state.sync.discard(id, who.actor()).await?;
    Ok(redirect("/sync?done=discarded"))
}

/// `GET /api/v1/sync/connectors`: the health of every connector, for monitoring.
pub async fn api_connectors(
    state: web::Data<AppState>,
    _caller: Principal,
) -> Result<HttpResponse, WebError> {
    let sync = state.sync.clone();
    let views = web::block(move || sync.connectors())
        .await
        .map_err(|e| WebError::Internal(e.to_string()))??;
    let now = state.clock.now();
    let body: Vec<_> = views
        .iter()
        .map(|view| {
            let s = &view.state;
            serde_json::json!({
                "name": view.config.name,
                "kind": view.config.kind,
                "running": view.running,
                "paused": s.paused,
                "interval_seconds": view.interval_now.as_secs_f64(),
                "next_run_at": view.next_run_at,
                "last_run_at": s.last_run_at,
                "last_success_at": s.last_success_at,
                "last_error": s.last_error,
                "failures_in_a_row": s.failures,
                "runs": s.runs,
                "items_total": s.items_total,
                "last_items": s.last_items,
                "waiting": s.waiting,
                "lag_seconds": view.lag(now).map(|lag| lag.as_secs()),
                "dead_letters": view.dead_letters,
                "cursor": s.cursor,
            })
        })
        .collect();
    let pushed: Vec<_> = state
        .sync
        .push()
        .views()
        .iter()
        .map(|view| {
            let h = &view.health;
            serde_json::json!({
                "name": view.name,
                "kind": view.kind,
                "requests": h.requests,
                "items": h.items,
                "refused": h.refused,
                "last_received_at": h.last_received_at,
                "last_success_at": h.last_success_at,
                "last_error": h.last_error,
                "last_error_at": h.last_error_at,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "connectors": body, "pushed": pushed })))
}
