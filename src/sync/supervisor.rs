//! The sync supervisor: it owns one task per configured connector and runs each on its
//! schedule: the connector's interval, or a peak window's shorter one, or after a failed run
//! an exponential backoff with jitter. Each connector's state (paused, cursor, last run, last
//! success, last error, items, failures in a row) is persisted in the store, so a restart
//! picks up where it stopped. Operators run a connector now, pause and resume it, and replay
//! or discard its dead letters from the Sync page; each of those is audited.
//!
//! Stopping is graceful: [`Supervisor::stop`] tells every task, a run in progress finishes
//! the file in hand (each file is all-or-nothing anyway), and the tasks end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Notify, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::audit::{Action, Actor, Event};
use crate::clock::{Clock, Random};
use crate::config::{ConnectorConfig, ConnectorKind, SyncConfig};
use crate::domain::Id;
use crate::inventory::ingest::{Ingest, IngestReport};
use crate::store::{ChangeSet, Store, StoreError, Table};

use super::held::{DeadLetter, Held};
use super::inbox::{FileError, Folder, Looks, import_bytes};
use super::push::{self, PushSources};
use super::schedule::{backoff, interval_at};

/// Each connector's persisted state, by name.
pub const SYNC_STATE: Table = Table::new("sync_state");

/// How often processed files past `[sync] keep_processed` are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How long [`Supervisor::stop`] waits for runs in progress.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// What is kept of a connector between runs and restarts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectorState {
    pub paused: bool,
    /// The connector's position: for a folder, the last file imported.
    pub cursor: Option<String>,
    pub last_run_at: Option<Timestamp>,
    pub last_success_at: Option<Timestamp>,
    /// The last failure, in words; cleared by the next success.
    pub last_error: Option<String>,
    /// Failed runs in a row (drives the backoff).
    pub failures: u32,
    pub runs: u64,
    /// Items (transactions) added, all time and in the last run.
    pub items_total: u64,
    pub last_items: u64,
    /// Items still waiting after the last run, and when the oldest arrived: the lag.
    pub waiting: u64,
    pub oldest_waiting_at: Option<Timestamp>,
}

/// One connector as the Sync page shows it.
#[derive(Debug, Clone)]
pub struct ConnectorView {
    pub config: ConnectorConfig,
    pub state: ConnectorState,
    pub running: bool,
    pub next_run_at: Option<Timestamp>,
    /// The interval in force now (a peak window's when one applies).
    pub interval_now: Duration,
    pub dead_letters: usize,
}

impl ConnectorView {
    /// How far behind the connector is: the age of the oldest item still waiting, at the
    /// last run.
    #[must_use]
    pub fn lag(&self, now: Timestamp) -> Option<Duration> {
        self.state
            .oldest_waiting_at
            .map(|at| now.duration_since(at).unsigned_abs())
    }
}

/// What a replay did.
#[derive(Debug)]
pub enum Replay {
    /// Imported: the letter is gone and the file archived.
    Imported(IngestReport),
    /// Refused again, with the new reason; the letter stays.
    Refused(String),
}

/// Why an operator's request was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("no connector is named `{0}`")]
    UnknownConnector(String),
    #[error("no such dead letter (it may have been replayed or discarded already)")]
    UnknownDeadLetter,
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One connector's task and what the pages ask of it.
#[derive(Debug)]
struct Slot {
    config: ConnectorConfig,
    zone: TimeZone,
    currency: String,
    /// Wakes the task: to run now when `run_now` is set, else to look at its state again.
    wake: Notify,
    run_now: AtomicBool,
    running: AtomicBool,
    next_run_at: std::sync::Mutex<Option<Timestamp>>,
    looks: Mutex<Looks>,
    /// Held across every read-modify-write of the persisted state.
    state_lock: Mutex<()>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    held: Held,
    ingest: Ingest,
    config: SyncConfig,
    /// `[pos] default_currency`, for a letter whose connector is gone.
    default_currency: String,
    slots: Vec<Arc<Slot>>,
    push: PushSources,
    stop: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// The sync supervisor (cheap to clone).
#[derive(Debug, Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl Supervisor {
    /// Starts one task per connector, and the task that drops old processed files.
    #[must_use]
    pub fn start(
        config: &crate::config::Config,
        store: Store,
        ingest: Ingest,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
    ) -> Self {
        let slots = config
            .sync
            .connectors(&config.pos)
            .into_iter()
            .map(|connector| {
                Arc::new(Slot {
                    zone: connector
                        .time_zone
                        .as_deref()
                        .and_then(|zone| TimeZone::get(zone).ok())
                        .unwrap_or(TimeZone::UTC),
                    currency: connector
                        .currency
                        .clone()
                        .unwrap_or_else(|| config.pos.default_currency.clone()),
                    config: connector,
                    wake: Notify::new(),
                    run_now: AtomicBool::new(false),
                    running: AtomicBool::new(false),
                    next_run_at: std::sync::Mutex::default(),
                    looks: Mutex::default(),
                    state_lock: Mutex::default(),
                })
            })
            .collect();
        let (stop, _) = watch::channel(false);
        let push = PushSources::default();
        push.register(push::POS_API, "JSON ingest API");
        if config.webhooks.listen.is_some() {
            if config.webhooks.square_signature_key_file.is_some() {
                push.register(push::SQUARE_WEBHOOK, "Square webhook");
            }
            if config.webhooks.shopify_secret_file.is_some() {
                push.register(push::SHOPIFY_WEBHOOK, "Shopify webhook");
            }
        }
        let supervisor = Self {
            inner: Arc::new(Inner {
                held: Held::new(store.clone(), Arc::clone(&clock), Arc::clone(&random)),
                store,
                clock,
                random,
                ingest,
                config: config.sync.clone(),
                default_currency: config.pos.default_currency.clone(),
                slots,
                push,
                stop,
                tasks: std::sync::Mutex::default(),
            }),
        };
        let mut tasks = Vec::new();
        for slot in &supervisor.inner.slots {
            let (inner, slot) = (Arc::clone(&supervisor.inner), Arc::clone(slot));
            tasks.push(tokio::spawn(drive(inner, slot)));
        }
        tasks.push(tokio::spawn(prune(Arc::clone(&supervisor.inner))));
        *crate::lock(&supervisor.inner.tasks) = tasks;
        supervisor
    }

    /// Tells every task to stop and waits for runs in progress to finish their file.
    pub async fn stop(&self) {
        self.inner.stop.send_replace(true);
        let tasks = std::mem::take(&mut *crate::lock(&self.inner.tasks));
        for mut task in tasks {
            if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
                warn!("a sync task did not stop in time and was cut short");
                task.abort();
            }
        }
    }

    /// The counters of the connectors that are pushed to (JSON API, webhooks).
    #[must_use]
    pub fn push(&self) -> &PushSources {
        &self.inner.push
    }

    /// The sealed store of processed files and dead letters.
    #[must_use]
    pub fn held(&self) -> &Held {
        &self.inner.held
    }

    /// Every connector, in configuration order.
    pub fn connectors(&self) -> Result<Vec<ConnectorView>, SyncError> {
        let letters = self.inner.held.dead_letters()?;
        let now = self.inner.clock.now();
        self.inner
            .slots
            .iter()
            .map(|slot| {
                Ok(ConnectorView {
                    state: self.inner.state(&slot.config.name)?,
                    running: slot.running.load(Ordering::Relaxed),
                    next_run_at: *crate::lock(&slot.next_run_at),
                    interval_now: interval_at(
                        slot.config.interval,
                        &slot.config.peak,
                        &slot.zone,
                        now,
                    ),
                    dead_letters: letters
                        .iter()
                        .filter(|l| l.connector == slot.config.name)
                        .count(),
                    config: slot.config.clone(),
                })
            })
            .collect()
    }

    /// One connector.
    pub fn connector(&self, name: &str) -> Result<ConnectorView, SyncError> {
        self.connectors()?
            .into_iter()
            .find(|view| view.config.name == name)
            .ok_or_else(|| SyncError::UnknownConnector(name.to_owned()))
    }

    fn slot(&self, name: &str) -> Result<&Arc<Slot>, SyncError> {
        self.inner
            .slots
            .iter()
            .find(|slot| slot.config.name == name)
            .ok_or_else(|| SyncError::UnknownConnector(name.to_owned()))
    }

    /// Runs a connector now (also while paused), recorded as `sync.run_requested`.
    pub async fn run_now(&self, name: &str, actor: Actor) -> Result<(), SyncError> {
        let slot = self.slot(name)?;
        self.inner
            .store
            .commit({
                let mut set = ChangeSet::new();
                Event::new(Action::SyncRunRequested)
                    .by(actor)
                    .target("connector", name)
                    .add_to(&mut set);
                set
            })
            .await?;
        slot.run_now.store(true, Ordering::SeqCst);
        slot.wake.notify_one();
        Ok(())
    }

    /// Pauses or resumes a connector (`sync.paused`, `sync.resumed`); kept across restarts.
    pub async fn set_paused(
        &self,
        name: &str,
        paused: bool,
        actor: Actor,
    ) -> Result<(), SyncError> {
        let slot = self.slot(name)?;
        {
            let _state = slot.state_lock.lock().await;
            let mut state = self.inner.state(name)?;
            if state.paused == paused {
                return Ok(());
            }
            state.paused = paused;
            let mut set = ChangeSet::new();
            set.put(SYNC_STATE, name.as_bytes().to_vec(), Store::json(&state)?);
            let action = if paused {
                Action::SyncPaused
            } else {
                Action::SyncResumed
            };
            Event::new(action)
                .by(actor)
                .target("connector", name)
                .add_to(&mut set);
            self.inner.store.commit(set).await?;
        }
        slot.wake.notify_one();
        info!(connector = name, paused, "connector paused or resumed");
        Ok(())
    }

    /// Reads a dead letter's contents for an operator (`sync.dead_letter_viewed`).
    pub async fn read_dead_letter(
        &self,
        id: Id,
        actor: Actor,
    ) -> Result<(DeadLetter, Vec<u8>), SyncError> {
        let letter = self
            .inner
            .held
            .dead_letter(id)?
            .ok_or(SyncError::UnknownDeadLetter)?;
        let contents = self.inner.held.contents(&letter)?;
        let mut set = ChangeSet::new();
        Event::new(Action::DeadLetterViewed)
            .by(actor)
            .target("dead_letter", id)
            .add_to(&mut set);
        self.inner.store.commit(set).await?;
        Ok((letter, contents))
    }

    /// Imports a dead letter again (after the catalog or the file's source was fixed). When
    /// its connector is no longer configured, `[pos] default_currency` applies.
    pub async fn replay(&self, id: Id, actor: Actor) -> Result<Replay, SyncError> {
        let held = &self.inner.held;
        let _operator = held.operator_lock().await;
        let letter = held.dead_letter(id)?.ok_or(SyncError::UnknownDeadLetter)?;
        let bytes = held.contents(&letter)?;
        let currency = self.slot(&letter.connector).map_or_else(
            |_| self.inner.default_currency.clone(),
            |slot| slot.currency.clone(),
        );
        let import = match self.inner.kind_of(&letter.connector) {
            ConnectorKind::PoslogFolder => {
                import_bytes(
                    &self.inner.ingest,
                    &bytes,
                    &letter.name,
                    &currency,
                    actor.clone(),
                )
                .await
            }
        };
        match import {
            Ok(report) => {
                let counts = (report.accepted as u64, report.duplicates as u64);
                held.close(&letter, Some((&bytes, counts.0, counts.1)), actor)
                    .await?;
                info!(connector = %letter.connector, "dead letter replayed");
                Ok(Replay::Imported(report))
            }
            Err(FileError::Refused(reason)) => {
                held.refused_again(&letter, &reason, actor).await?;
                Ok(Replay::Refused(reason))
            }
            Err(FileError::Failed(err)) => Err(SyncError::Failed(err)),
        }
    }

    /// Drops a dead letter and its contents (`sync.dead_letter_discarded`).
    pub async fn discard(&self, id: Id, actor: Actor) -> Result<(), SyncError> {
        let held = &self.inner.held;
        let _operator = held.operator_lock().await;
        let letter = held.dead_letter(id)?.ok_or(SyncError::UnknownDeadLetter)?;
        held.close(&letter, None, actor).await?;
        info!(connector = %letter.connector, "dead letter discarded");
        Ok(())
    }
}

impl Inner {
    fn state(&self, name: &str) -> Result<ConnectorState, StoreError> {
        Ok(self
            .store
            .get_json(SYNC_STATE, name.as_bytes())?
            .unwrap_or_default())
    }

    /// The kind of a connector; a letter whose connector is gone was made by a folder (the
    /// only kind that makes letters).
    fn kind_of(&self, name: &str) -> ConnectorKind {
        self.slots
            .iter()
            .find(|slot| slot.config.name == name)
            .map_or(ConnectorKind::PoslogFolder, |slot| slot.config.kind)
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// The wait before the next scheduled run; `None` while paused.
    fn wait(&self, slot: &Slot, state: &ConnectorState) -> Option<Duration> {
        if state.paused {
            return None;
        }
        if state.failures > 0 {
            let mut bytes = [0u8; 8];
            let jitter = match self.random.fill(&mut bytes) {
                Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
                Err(_) => 0.5,
            };
            return Some(backoff(
                state.failures,
                self.config.retry_initial,
                self.config.retry_max,
                jitter,
            ));
        }
        Some(interval_at(
            slot.config.interval,
            &slot.config.peak,
            &slot.zone,
            self.clock.now(),
        ))
    }

    /// One run of a connector, its outcome written to the persisted state.
    async fn run(&self, slot: &Slot) -> Result<(), StoreError> {
        slot.running.store(true, Ordering::Relaxed);
        let started = self.clock.now();
        let outcome = match slot.config.kind {
            ConnectorKind::PoslogFolder => {
                let folder = slot.config.folder.clone().unwrap_or_default();
                let run = Folder {
                    connector: &slot.config.name,
                    folder: &folder,
                    settle: slot.config.settle,
                    currency: &slot.currency,
                    ingest: &self.ingest,
                    held: &self.held,
                    clock: self.clock.as_ref(),
                };
                let mut looks = slot.looks.lock().await;
                run.run(&mut looks, &|| self.stopping()).await
            }
        };
        slot.running.store(false, Ordering::Relaxed);

        let _state = slot.state_lock.lock().await;
        let mut state = self.state(&slot.config.name)?;
        state.runs += 1;
        state.last_run_at = Some(started);
        match outcome {
            Ok(run) => {
                state.failures = 0;
                state.last_error = None;
                state.last_success_at = Some(self.clock.now());
                state.items_total += run.accepted;
                state.last_items = run.accepted;
                if run.last_file.is_some() {
                    state.cursor = run.last_file;
                }
                state.waiting = run.waiting;
                state.oldest_waiting_at = run.oldest_waiting;
                if run.set_aside > 0 {
                    state.last_error = Some(format!(
                        "{} file(s) refused and held as dead letters",
                        run.set_aside
                    ));
                }
            }
            Err(error) => {
                state.failures = state.failures.saturating_add(1);
                warn!(connector = %slot.config.name, failures = state.failures, error = %error, "sync run failed");
                state.last_error = Some(error);
            }
        }
        let mut set = ChangeSet::new();
        set.put(
            SYNC_STATE,
            slot.config.name.as_bytes().to_vec(),
            Store::json(&state)?,
        );
        self.store.commit(set).await
    }
}

/// Sleeps for `wait`, or forever when `None`.
async fn sleep_or_park(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

/// A connector's task: wait for the schedule, a wake-up or the stop, then run.
async fn drive(inner: Arc<Inner>, slot: Arc<Slot>) {
    let mut stop = inner.stop.subscribe();
    // The first run comes at start, not one interval later.
    let mut first = true;
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        let state = match inner.state(&slot.config.name) {
            Ok(state) => state,
            Err(err) => {
                warn!(connector = %slot.config.name, error = %err, "connector state unreadable");
                ConnectorState {
                    failures: 1,
                    ..ConnectorState::default()
                }
            }
        };
        let wait = match inner.wait(&slot, &state) {
            Some(_) if first => Some(Duration::ZERO),
            wait => wait,
        };
        first = false;
        *crate::lock(&slot.next_run_at) = wait.and_then(|wait| {
            jiff::SignedDuration::try_from(wait)
                .ok()
                .and_then(|wait| inner.clock.now().checked_add(wait).ok())
        });
        let woken = tokio::select! {
            () = sleep_or_park(wait) => false,
            () = slot.wake.notified() => true,
            _ = stop.changed() => break,
        };
        let asked = slot.run_now.swap(false, Ordering::SeqCst);
        if woken && !asked {
            // Paused, resumed: look at the state again.
            continue;
        }
        if state.paused && !asked {
            continue;
        }
        if let Err(err) = inner.run(&slot).await {
            warn!(connector = %slot.config.name, error = %err, "connector state not saved");
        }
    }
}

/// Key in [`SYNC_STATE`] of the connector settings seen at the last start (never a
/// connector's name: those have no `:`).
const SEEN_CONFIG: &[u8] = b":configuration";

/// Records `sync.configured` for each connector added, changed or removed in the
/// configuration file since the last start.
async fn record_configuration_changes(inner: &Inner) -> Result<(), StoreError> {
    let now: std::collections::BTreeMap<String, String> = inner
        .slots
        .iter()
        .map(|slot| {
            let text = format!("{:?}", slot.config);
            let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
            (
                slot.config.name.clone(),
                data_encoding::HEXLOWER.encode(digest.as_ref()),
            )
        })
        .collect();
    let before: std::collections::BTreeMap<String, String> = inner
        .store
        .get_json(SYNC_STATE, SEEN_CONFIG)?
        .unwrap_or_default();
    if before == now {
        return Ok(());
    }
    let mut set = ChangeSet::new();
    let names: std::collections::BTreeSet<&String> = before.keys().chain(now.keys()).collect();
    for name in names {
        let reason = match (before.get(name), now.get(name)) {
            (None, Some(_)) => "connector added to the configuration",
            (Some(_), None) => "connector removed from the configuration",
            (Some(a), Some(b)) if a != b => "connector settings changed in the configuration",
            _ => continue,
        };
        Event::new(Action::SyncConfigured)
            .by(Actor::system("startup"))
            .target("connector", name)
            .reason(reason)
            .add_to(&mut set);
    }
    set.put(SYNC_STATE, SEEN_CONFIG.to_vec(), Store::json(&now)?);
    inner.store.commit(set).await
}

/// Records configuration changes, then drops processed files past `[sync] keep_processed`,
/// at start and then every hour.
async fn prune(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    if let Err(err) = record_configuration_changes(&inner).await {
        warn!(error = %err, "connector configuration changes could not be recorded");
    }
    loop {
        match inner.held.prune(inner.config.keep_processed).await {
            Ok(0) => {}
            Ok(dropped) => info!(
                files = dropped,
                "processed files past their keeping time dropped"
            ),
            Err(err) => warn!(error = %err, "processed files could not be pruned"),
        }
        tokio::select! {
            () = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = stop.changed() => break,
        }
    }
}
