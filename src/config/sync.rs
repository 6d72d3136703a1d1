//! `[sync]`: the connectors the sync supervisor runs and their shared retry policy.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, PosConfig, duration};
use crate::sync::schedule::PeakWindow;

/// The sync engine. Each `[[sync.connectors]]` entry is one connector with its own schedule;
/// `[pos] inbox`, when set, adds a `POSLog` folder connector named `pos-inbox`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// First wait after a failed run; it doubles with each failure in a row, up to
    /// `retry_max`, half of it jittered.
    #[serde(deserialize_with = "duration")]
    pub retry_initial: Duration,
    #[serde(deserialize_with = "duration")]
    pub retry_max: Duration,
    /// How long processed files are kept, sealed in the store, after their import.
    #[serde(deserialize_with = "duration")]
    pub keep_processed: Duration,
    pub connectors: Vec<ConnectorConfig>,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            retry_initial: Duration::from_secs(2),
            retry_max: Duration::from_secs(600),
            keep_processed: Duration::from_secs(7 * 24 * 3600),
            connectors: Vec::new(),
        }
    }
}

/// What a connector talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorKind {
    /// A folder the registers drop ARTS `POSLog` XML files into.
    PoslogFolder,
}

impl ConnectorKind {
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::PoslogFolder => "POSLog file drop",
        }
    }
}

/// One connector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// Unique name: lower-case letters, digits and `-`, as shown on the Sync page and in the
    /// audit trail.
    pub name: String,
    pub kind: ConnectorKind,
    /// The watched folder (`poslog_folder`), an absolute path.
    pub folder: Option<PathBuf>,
    /// Time between runs outside peak windows.
    #[serde(deserialize_with = "duration", default = "default_interval")]
    pub interval: Duration,
    /// Peak seasons with their own interval (`[[sync.connectors.peak]]`).
    #[serde(default)]
    pub peak: Vec<PeakWindow>,
    /// IANA time zone the peak hours are read in; UTC when unset.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// A file is read once it has not changed for this long and its size was the same at two
    /// looks in a row.
    #[serde(deserialize_with = "duration", default = "default_settle")]
    pub settle: Duration,
    /// ISO 4217 currency of transactions without one; `[pos] default_currency` when unset.
    #[serde(default)]
    pub currency: Option<String>,
}

fn default_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_settle() -> Duration {
    Duration::from_secs(5)
}

/// Name of the connector `[pos] inbox` adds.
pub const POS_INBOX: &str = "pos-inbox";

impl SyncConfig {
    /// Every connector to run: those of `[[sync.connectors]]`, then the `[pos] inbox` one.
    #[must_use]
    pub fn connectors(&self, pos: &PosConfig) -> Vec<ConnectorConfig> {
        let mut all = self.connectors.clone();
        if let Some(inbox) = &pos.inbox {
            all.push(ConnectorConfig {
                name: POS_INBOX.to_owned(),
                kind: ConnectorKind::PoslogFolder,
                folder: Some(inbox.clone()),
                interval: pos.poll_interval,
                peak: Vec::new(),
                time_zone: None,
                settle: pos.settle,
                currency: None,
            });
        }
        all
    }

    pub(super) fn validate(&self, pos: &PosConfig) -> Result<(), ConfigError> {
        let invalid = |key: String, message: &str| {
            Err(ConfigError::Invalid {
                origin: "configuration".into(),
                key,
                message: message.into(),
            })
        };
        if self.retry_initial < Duration::from_millis(10) || self.retry_initial > self.retry_max {
            return invalid(
                "sync.retry_initial".into(),
                "must be at least 10 milliseconds and at most sync.retry_max",
            );
        }
        if self.keep_processed < Duration::from_secs(60) {
            return invalid("sync.keep_processed".into(), "must be at least one minute");
        }
        let mut names = HashSet::new();
        let mut folders = HashSet::new();
        for (n, connector) in self.connectors(pos).iter().enumerate() {
            let key = |field: &str| {
                if connector.name == POS_INBOX && n >= self.connectors.len() {
                    format!("pos.{}", if field == "folder" { "inbox" } else { field })
                } else {
                    format!("sync.connectors[{n}].{field}")
                }
            };
            let name = &connector.name;
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return invalid(
                    key("name"),
                    "must be 1 to 64 lower-case letters, digits or '-'",
                );
            }
            if name == POS_INBOX && n < self.connectors.len() && pos.inbox.is_some() {
                return invalid(
                    key("name"),
                    "`pos-inbox` names the connector of `[pos] inbox`; choose another name",
                );
            }
            if !names.insert(name.clone()) {
                return invalid(key("name"), &format!("`{name}` names two connectors"));
            }
            if connector.interval < Duration::from_millis(50)
                || connector
                    .peak
                    .iter()
                    .any(|p| p.interval < Duration::from_millis(50))
            {
                return invalid(key("interval"), "must be at least 50 milliseconds");
            }
            if let Some(zone) = &connector.time_zone
                && jiff::tz::TimeZone::get(zone).is_err()
            {
                return invalid(
                    key("time_zone"),
                    &format!("`{zone}` is not a time zone this machine knows (like Europe/Paris)"),
                );
            }
            if let Some(currency) = &connector.currency
                && (currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()))
            {
                return invalid(
                    key("currency"),
                    "must be an upper-case ISO 4217 code such as USD or EUR",
                );
            }
            match connector.kind {
                ConnectorKind::PoslogFolder => match &connector.folder {
                    Some(folder) if folder.is_absolute() => {
                        if !folders.insert(folder.clone()) {
                            return invalid(
                                key("folder"),
                                "is watched by another connector already",
                            );
                        }
                    }
                    Some(_) => return invalid(key("folder"), "must be an absolute path"),
                    None => {
                        return invalid(key("folder"), "is required for a poslog_folder connector");
                    }
                },
            }
        }
        Ok(())
    }
}
