//! Typed configuration: a TOML file, then `CLIENTELE_` environment variables, then command-line
//! flags, in that order. Unknown keys are errors, and every error names the key (or variable)
//! and what is wrong with it. Secrets are given as file paths, so no secret is ever held here.

mod sync;
pub use sync::{ConnectorConfig, ConnectorKind, POS_INBOX, SyncConfig};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Where the packaged configuration lives.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/clientele/clientele.toml";

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "CLIENTELE_";

/// The whole configuration of one Clientele appliance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Folder holding the database, subject keystore, certificate and control socket.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub keys: KeysConfig,
    pub store: StoreConfig,
    pub log: LogConfig,
    pub session: SessionConfig,
    pub audit: AuditConfig,
    pub customers: CustomersConfig,
    pub pos: PosConfig,
    pub backup: BackupConfig,
    pub webhooks: WebhooksConfig,
    pub sync: SyncConfig,
}

/// Signed POS webhooks (Square, Shopify) on a listener of their own, which serves nothing else
/// (so it may face the outside without exposing the UI). Off while `listen` is unset. The
/// shared secrets are read from files, never held here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Address of the webhook listener (HTTPS, with the server's certificate). None: off.
    pub listen: Option<SocketAddr>,
    /// Store code the webhook sales are booked to.
    pub store_code: String,
    /// File holding Square's signature key. None: `/webhooks/square` refuses everything.
    pub square_signature_key_file: Option<PathBuf>,
    /// The exact notification URL configured at Square (part of what is signed).
    pub square_notification_url: Option<String>,
    /// File holding the Shopify webhook secret. None: `/webhooks/shopify` refuses everything.
    pub shopify_secret_file: Option<PathBuf>,
}

impl WebhooksConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                origin: "configuration".into(),
                key: key.into(),
                message: message.into(),
            })
        };
        if self.store_code.trim().is_empty() {
            return invalid("webhooks.store_code", "must not be empty");
        }
        if self.square_signature_key_file.is_some() && self.square_notification_url.is_none() {
            return invalid(
                "webhooks.square_notification_url",
                "must be set with webhooks.square_signature_key_file (it is part of what Square signs)",
            );
        }
        Ok(())
    }
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            listen: None,
            store_code: "WEB".into(),
            square_signature_key_file: None,
            square_notification_url: None,
            shopify_secret_file: None,
        }
    }
}

/// Point-of-sale connectors: the `POSLog` drop folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PosConfig {
    /// Folder the registers drop `POSLog` files into (`*.xml`); polled by the server. Files are
    /// taken out of it and kept sealed in the store. Shorthand for a `[[sync.connectors]]` entry
    /// named `pos-inbox`. None: no folder is watched.
    pub inbox: Option<PathBuf>,
    /// How often the folder is looked at.
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// A file is read only once it has not changed for this long and its size was the same at
    /// two looks in a row (a register still writing it is left alone).
    #[serde(deserialize_with = "duration")]
    pub settle: Duration,
    /// ISO 4217 currency of transactions without a `<CurrencyCode>`.
    pub default_currency: String,
}

impl Default for PosConfig {
    fn default() -> Self {
        Self {
            inbox: None,
            poll_interval: Duration::from_secs(2),
            settle: Duration::from_secs(5),
            default_currency: "USD".into(),
        }
    }
}

/// Scheduled backups (`clientele backup` works whether or not they are on).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Writes a backup every `interval` while the server runs.
    pub enabled: bool,
    /// Folder of the scheduled backups; `data_dir/backups` when unset.
    pub folder: Option<PathBuf>,
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// Scheduled backups kept; older ones are deleted after a new one is written.
    pub retention: usize,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            folder: None,
            interval: Duration::from_secs(24 * 3600),
            retention: 7,
        }
    }
}

/// Customer profiles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CustomersConfig {
    /// ISO 3166-1 alpha-2 country whose national phone numbers (a leading 0, no `+`) are
    /// understood without a country code.
    pub default_country: String,
    /// Customers inactive (no purchase, visit or profile change) for longer than this are
    /// listed for review on the privacy page and may be erased in bulk.
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
}

impl Default for CustomersConfig {
    fn default() -> Self {
        Self {
            default_country: "US".into(),
            retention: Duration::from_secs(3 * 365 * 24 * 3600),
        }
    }
}

/// The audit trail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// A signed checkpoint is made after this many new entries.
    pub checkpoint_entries: u64,
    /// ... and at least this often while entries keep coming.
    #[serde(deserialize_with = "duration")]
    pub checkpoint_interval: Duration,
    /// Entries older than this are archived (signed export) and then dropped.
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
    /// Stops every deletion of audit entries (litigation, investigation).
    pub legal_hold: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_entries: 1000,
            checkpoint_interval: Duration::from_secs(10 * 60),
            retention: Duration::from_secs(400 * 24 * 3600),
            legal_hold: false,
        }
    }
}

/// Sign-in sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// A session unused for this long ends.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// A session ends this long after sign-in, however active.
    #[serde(deserialize_with = "duration")]
    pub absolute_timeout: Duration,
    /// Password hashes (about 25 ms and 19 MiB each) allowed at once; further sign-ins get 429.
    pub max_concurrent_hashes: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(12 * 3600),
            // Half the cores: on a 2-core machine a second concurrent hash adds no sign-ins per
            // second, it only takes the core that pages need (`clientele bench web`).
            max_concurrent_hashes: std::thread::available_parallelism()
                .map_or(1, |n| (n.get() / 2).max(1)),
        }
    }
}

/// The HTTPS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port of the HTTPS listener.
    pub listen: SocketAddr,
    /// Optional plain-HTTP listener that only redirects to HTTPS.
    pub redirect_listen: Option<SocketAddr>,
    /// PEM certificate chain; when unset, a self-signed certificate is made in `data_dir/tls`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key matching `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Host names and addresses the self-signed certificate is made for.
    pub certificate_names: Vec<String>,
    /// Number of HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
}

/// Where the master key comes from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Folder holding the master key file and the erasure ledger; defaults to `data_dir/keys`.
    pub dir: Option<PathBuf>,
    /// Master key file (64 hex digits, mode 0400); defaults to `keys.dir/master.key`.
    pub master_key_file: Option<PathBuf>,
    /// Use a passphrase read from this file (through Argon2id) instead of a key file.
    pub passphrase_file: Option<PathBuf>,
}

/// The embedded store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// sled page cache, in MiB.
    pub cache_mib: u64,
    /// Encryptions under one data-key term before it is rotated automatically. Random 96-bit
    /// nonces stay safe well beyond this (NIST SP 800-38D sets 2^32 per key).
    pub max_encryptions_per_term: u64,
    /// Longest a committed write waits for others to share its flush.
    #[serde(deserialize_with = "duration")]
    pub group_commit_window: Duration,
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Folder for rolling log files; defaults to `data_dir/logs`.
    pub dir: Option<PathBuf>,
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `clientele=debug,actix_web=warn`.
    pub level: String,
    /// Number of daily log files kept.
    pub retention_files: usize,
    /// Also write to standard error.
    pub stderr: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/clientele"),
            server: ServerConfig::default(),
            keys: KeysConfig::default(),
            store: StoreConfig::default(),
            log: LogConfig::default(),
            session: SessionConfig::default(),
            audit: AuditConfig::default(),
            customers: CustomersConfig::default(),
            pos: PosConfig::default(),
            backup: BackupConfig::default(),
            webhooks: WebhooksConfig::default(),
            sync: SyncConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            redirect_listen: None,
            tls_cert: None,
            tls_key: None,
            certificate_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            workers: 0,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cache_mib: 64,
            max_encryptions_per_term: 1 << 30,
            group_commit_window: Duration::from_micros(0),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            dir: None,
            format: LogFormat::Text,
            level: "info".into(),
            retention_files: 30,
            stderr: true,
        }
    }
}

impl Config {
    /// The folder of the master key and the erasure ledger.
    #[must_use]
    pub fn keys_dir(&self) -> PathBuf {
        self.keys
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys"))
    }

    /// The master key file, when no passphrase is configured.
    #[must_use]
    pub fn master_key_file(&self) -> PathBuf {
        self.keys
            .master_key_file
            .clone()
            .unwrap_or_else(|| self.keys_dir().join("master.key"))
    }

    #[must_use]
    pub fn log_dir(&self) -> PathBuf {
        self.log
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("logs"))
    }

    #[must_use]
    pub fn db_dir(&self) -> PathBuf {
        self.data_dir.join("db")
    }

    #[must_use]
    pub fn tls_dir(&self) -> PathBuf {
        self.data_dir.join("tls")
    }

    /// The folder of scheduled backups.
    #[must_use]
    pub fn backup_dir(&self) -> PathBuf {
        self.backup
            .folder
            .clone()
            .unwrap_or_else(|| self.data_dir.join("backups"))
    }

    #[must_use]
    pub fn control_socket(&self) -> PathBuf {
        self.data_dir.join("control.sock")
    }

    /// Reads the configuration: `file` when given (it must exist), else the packaged path when
    /// it exists, else the defaults; then applies `CLIENTELE_` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (table, origin) = match file {
            Some(path) => (read_table(path)?, path.display().to_string()),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => (
                read_table(Path::new(DEFAULT_CONFIG_PATH))?,
                DEFAULT_CONFIG_PATH.to_owned(),
            ),
            None => (toml::Table::new(), "built-in defaults".to_owned()),
        };
        Self::from_table(table, &origin, env)
    }

    /// Development defaults: data in `./clientele-data`, HTTPS on 127.0.0.1:8443, then the
    /// same environment overrides as a file.
    pub fn load_dev(env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let table = DEV_DEFAULTS
            .parse::<toml::Table>()
            .map_err(|err| ConfigError::Syntax {
                path: PathBuf::from("(development defaults)"),
                message: err.to_string(),
            })?;
        Self::from_table(table, "development defaults", env)
    }

    fn from_table(
        mut table: toml::Table,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let from_env = apply_env(&mut table, env)?;

        let config: Self =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|err| {
                let key = err.path().to_string();
                let message = err.inner().to_string();
                // A key set by a variable is blamed on the variable, not on the file.
                let variable = from_env.iter().find(|(path, _)| {
                    let (parent, last) = path.rsplit_once('.').unwrap_or((".", path.as_str()));
                    *path == key || (parent == key && message.contains(&format!("`{last}`")))
                });
                ConfigError::Invalid {
                    origin: variable.map_or_else(
                        || origin.to_owned(),
                        |(_, name)| format!("environment variable {name}"),
                    ),
                    key,
                    message,
                }
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that hold across keys, after every source has been applied.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                origin: "configuration".into(),
                key: key.into(),
                message: message.into(),
            })
        };
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return invalid(
                "server.tls_cert",
                "tls_cert and tls_key must be given together (or neither, for a self-signed one)",
            );
        }
        if self.store.cache_mib == 0 {
            return invalid("store.cache_mib", "must be at least 1");
        }
        if self.store.max_encryptions_per_term == 0 || self.store.max_encryptions_per_term > 1 << 32
        {
            return invalid(
                "store.max_encryptions_per_term",
                "must be between 1 and 4294967296 (2^32)",
            );
        }
        if self.customers.default_country.len() != 2
            || !self
                .customers
                .default_country
                .bytes()
                .all(|b| b.is_ascii_alphabetic())
            || self
                .customers
                .default_country
                .parse::<phonenumber::country::Id>()
                .is_err()
        {
            return invalid(
                "customers.default_country",
                "must be a two-letter country code such as GB, FR or US",
            );
        }
        if self.pos.poll_interval < Duration::from_millis(50) {
            return invalid("pos.poll_interval", "must be at least 50 milliseconds");
        }
        if self.pos.default_currency.len() != 3
            || !self
                .pos
                .default_currency
                .bytes()
                .all(|b| b.is_ascii_uppercase())
        {
            return invalid(
                "pos.default_currency",
                "must be an upper-case ISO 4217 code such as USD or EUR",
            );
        }
        self.sync.validate(&self.pos)?;
        self.webhooks.validate()?;
        if self.audit.checkpoint_entries == 0 {
            return invalid("audit.checkpoint_entries", "must be at least 1");
        }
        if self.audit.checkpoint_interval < Duration::from_secs(1) {
            return invalid("audit.checkpoint_interval", "must be at least one second");
        }
        if self.audit.retention < Duration::from_secs(24 * 3600) {
            return invalid("audit.retention", "must be at least one day");
        }
        if self.session.max_concurrent_hashes == 0 {
            return invalid("session.max_concurrent_hashes", "must be at least 1");
        }
        if self.session.idle_timeout.is_zero()
            || self.session.idle_timeout > self.session.absolute_timeout
        {
            return invalid(
                "session.idle_timeout",
                "must be above zero and at most session.absolute_timeout",
            );
        }
        if self.backup.interval < Duration::from_secs(60) {
            return invalid("backup.interval", "must be at least one minute");
        }
        if self.backup.retention == 0 {
            return invalid("backup.retention", "must be at least 1");
        }
        if self.log.retention_files == 0 {
            return invalid("log.retention_files", "must be at least 1");
        }
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return invalid("log.level", &err.to_string());
        }
        Ok(())
    }
}

/// What `serve --dev` runs on when no config file is given.
const DEV_DEFAULTS: &str = r#"
data_dir = "clientele-data"

[server]
listen = "127.0.0.1:8443"
workers = 2
"#;

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<toml::Table>()
        .map_err(|err| ConfigError::Syntax {
            path: path.to_owned(),
            message: err.to_string(),
        })
}

/// Applies `CLIENTELE_SECTION__KEY=value` (nested keys joined by a double underscore) and
/// `CLIENTELE_KEY=value` (top-level keys). A value is read as a TOML value when it parses as
/// one (numbers, booleans, arrays) and as a string otherwise.
/// Returns the dotted key path and name of every variable applied.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut applied = Vec::new();
    let overrides: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX) && !ENV_FLAGS.contains(&name.as_str()))
        .collect();

    for (name, raw) in overrides {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::UnknownVariable { name });
        }
        let value = parse_env_value(&raw);
        let mut node = &mut *table;
        let (last, parents) = path
            .split_last()
            .ok_or_else(|| ConfigError::UnknownVariable { name: name.clone() })?;
        for part in parents {
            let entry = node
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = entry
                .as_table_mut()
                .ok_or_else(|| ConfigError::UnknownVariable { name: name.clone() })?;
        }
        node.insert(last.clone(), value);
        applied.push((path.join("."), name));
    }
    Ok(applied)
}

/// Environment variables that belong to command-line flags, not to config keys.
const ENV_FLAGS: &[&str] = &["CLIENTELE_CONFIG", "CLIENTELE_LOG"];

fn parse_env_value(raw: &str) -> toml::Value {
    let probe = format!("v = {raw}");
    match probe.parse::<toml::Table>() {
        Ok(mut table) => table
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

pub(crate) fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|err| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration ({err}); write it like \"30m\", \"12h\" or \"500ms\""
        ))
    })
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{origin}: key `{key}`: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
    #[error(
        "environment variable {name} does not name a config key; use CLIENTELE_SECTION__KEY, \
         for example CLIENTELE_SERVER__LISTEN"
    )]
    UnknownVariable { name: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Config::load(Some(file.path()), env)
    }

    #[test]
    fn file_then_environment() {
        let config = load_text(
            "data_dir = \"/srv/c\"\n[server]\nlisten = \"127.0.0.1:9000\"\n",
            &[
                ("CLIENTELE_SERVER__WORKERS", "3"),
                ("CLIENTELE_LOG__FORMAT", "json"),
            ],
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/srv/c"));
        assert_eq!(config.server.listen.port(), 9000);
        assert_eq!(config.server.workers, 3);
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(
            config.master_key_file(),
            PathBuf::from("/srv/c/keys/master.key")
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load_text("[server]\nlisen = \"127.0.0.1:9000\"\n", &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("server"), "{text}");
        assert!(text.contains("lisen"), "{text}");
    }

    #[test]
    fn connectors_are_read_and_their_mistakes_named() {
        let good = r#"
[pos]
inbox = "/srv/pos"
[[sync.connectors]]
name = "store-12"
kind = "poslog_folder"
folder = "/srv/store-12"
interval = "1m"
time_zone = "Europe/Paris"
[[sync.connectors.peak]]
from = "11-25"
to = "12-31"
hours = "08:00-22:00"
interval = "5s"
"#;
        let config = load_text(good, &[]).unwrap();
        let all = config.sync.connectors(&config.pos);
        assert_eq!(
            all.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["store-12", POS_INBOX]
        );
        assert_eq!(all[0].peak[0].interval, Duration::from_secs(5));

        let cases = [
            (
                "from = \"11-25\"",
                "from = \"11-32\"",
                "sync.connectors[0].peak[0].from",
            ),
            (
                "hours = \"08:00-22:00\"",
                "hours = \"8 to 10\"",
                "sync.connectors[0].peak[0].hours",
            ),
            (
                "\"Europe/Paris\"",
                "\"Mars/Olympus\"",
                "sync.connectors[0].time_zone",
            ),
            (
                "name = \"store-12\"",
                "name = \"Store 12\"",
                "sync.connectors[0].name",
            ),
            (
                "name = \"store-12\"",
                "name = \"pos-inbox\"",
                "sync.connectors[0].name",
            ),
            (
                "folder = \"/srv/store-12\"",
                "folder = \"srv\"",
                "sync.connectors[0].folder",
            ),
            (
                "folder = \"/srv/store-12\"",
                "folder = \"/srv/pos\"",
                "pos.inbox",
            ),
            (
                "kind = \"poslog_folder\"",
                "kind = \"ftp\"",
                "sync.connectors[0].kind",
            ),
        ];
        for (from, to, key) in cases {
            let err = load_text(&good.replace(from, to), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{to}: {err}");
        }
    }

    #[test]
    fn bad_duration_and_address_are_named() {
        let err = load_text("[store]\ngroup_commit_window = \"soon\"\n", &[]).unwrap_err();
        assert!(
            err.to_string().contains("store.group_commit_window"),
            "{err}"
        );
        let err = load_text("[server]\nlisten = \"nowhere\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("server.listen"), "{err}");
    }

    #[test]
    fn a_bad_variable_is_blamed_on_the_variable() {
        let err = load_text("", &[("CLIENTELE_REQUIRE_BROWSER", "1")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("environment variable CLIENTELE_REQUIRE_BROWSER"),
            "{err}"
        );
        let err = load_text("", &[("CLIENTELE_SERVER__LISTEN", "nowhere")]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("CLIENTELE_SERVER__LISTEN") && text.contains("server.listen"),
            "{text}"
        );
    }

    #[test]
    fn unknown_variable_is_named() {
        let err = load_text("", &[("CLIENTELE_SERVR__LISTEN", "1")]).unwrap_err();
        assert!(err.to_string().contains("servr"), "{err}");
    }

    #[test]
    fn syntax_error_names_the_file() {
        let err = load_text("[server\n", &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    }

    #[test]
    fn backup_section_is_off_by_default_and_checked() {
        let config = load_text("", &[]).unwrap();
        assert!(!config.backup.enabled);
        assert_eq!(config.backup_dir(), config.data_dir.join("backups"));
        let config = load_text(
            "[backup]\nenabled = true\nfolder = \"/srv/b\"\ninterval = \"6h\"\nretention = 3\n",
            &[],
        )
        .unwrap();
        assert!(config.backup.enabled);
        assert_eq!(config.backup_dir(), PathBuf::from("/srv/b"));
        assert_eq!(config.backup.interval, Duration::from_secs(6 * 3600));
        let err = load_text("[backup]\ninterval = \"10s\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("backup.interval"), "{err}");
        let err = load_text("[backup]\nretention = 0\n", &[]).unwrap_err();
        assert!(err.to_string().contains("backup.retention"), "{err}");
    }

    #[test]
    fn the_packaged_file_parses() {
        let text = include_str!("../packaging/clientele.toml");
        let config = load_text(text, &[]).unwrap();
        assert!(!config.backup.enabled);
        assert_eq!(config.backup.retention, 7);
    }
}
