//! Health of the connectors that are pushed to rather than polled: the JSON ingest API and
//! the signed webhooks. They have no schedule, so the supervisor does not run them; it counts
//! what reaches them, for the Sync page and the monitoring API. Counts are kept in memory
//! and start again at zero with the server (the sales themselves, and every refusal of a
//! webhook, are in the store and the audit trail).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

/// The push connectors, by name.
pub const POS_API: &str = "pos-api";
pub const SQUARE_WEBHOOK: &str = "webhook-square";
pub const SHOPIFY_WEBHOOK: &str = "webhook-shopify";

/// What one push connector has seen since the server started.
#[derive(Debug, Clone, Default)]
pub struct PushHealth {
    /// Requests received (accepted, duplicate or refused).
    pub requests: u64,
    /// Transactions added.
    pub items: u64,
    pub refused: u64,
    pub last_received_at: Option<Timestamp>,
    pub last_success_at: Option<Timestamp>,
    /// The last refusal, in words, and when.
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
}

/// One push connector as the Sync page shows it.
#[derive(Debug, Clone)]
pub struct PushView {
    pub name: &'static str,
    pub kind: &'static str,
    pub health: PushHealth,
}

/// The counters of every push connector that is on.
#[derive(Debug, Clone, Default)]
pub struct PushSources {
    sources: Arc<Mutex<BTreeMap<&'static str, (&'static str, PushHealth)>>>,
}

impl PushSources {
    /// Lists a push connector (it shows with zero counts until something arrives).
    pub fn register(&self, name: &'static str, kind: &'static str) {
        crate::lock(&self.sources)
            .entry(name)
            .or_insert((kind, PushHealth::default()));
    }

    fn update(&self, name: &'static str, now: Timestamp, change: impl FnOnce(&mut PushHealth)) {
        let mut sources = crate::lock(&self.sources);
        if let Some((_, health)) = sources.get_mut(name) {
            health.requests += 1;
            health.last_received_at = Some(now);
            change(health);
        }
    }

    /// A request was taken: `items` new transactions (0 for a duplicate or an ignored event).
    pub fn accepted(&self, name: &'static str, items: u64, now: Timestamp) {
        self.update(name, now, |health| {
            health.items += items;
            health.last_success_at = Some(now);
        });
    }

    /// A request was refused, with why (never a value it carried).
    pub fn refused(&self, name: &'static str, reason: &str, now: Timestamp) {
        self.update(name, now, |health| {
            health.refused += 1;
            health.last_error = Some(reason.to_owned());
            health.last_error_at = Some(now);
        });
    }

    /// Every registered push connector, by name.
    #[must_use]
    pub fn views(&self) -> Vec<PushView> {
        crate::lock(&self.sources)
            .iter()
            .map(|(name, (kind, health))| PushView {
                name,
                kind,
                health: health.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_go_to_registered_connectors_only() {
        let sources = PushSources::default();
        sources.register(POS_API, "JSON ingest API");
        let t1: Timestamp = "2026-12-04T10:00:00Z".parse().unwrap();
        let t2: Timestamp = "2026-12-04T10:01:00Z".parse().unwrap();
        sources.accepted(POS_API, 3, t1);
        sources.refused(POS_API, "transactions[0].currency: not a code", t2);
        sources.accepted(SQUARE_WEBHOOK, 1, t2);
        let views = sources.views();
        assert_eq!(views.len(), 1);
        let health = &views[0].health;
        assert_eq!((health.requests, health.items, health.refused), (2, 3, 1));
        assert_eq!(health.last_success_at, Some(t1));
        assert_eq!(health.last_received_at, Some(t2));
        assert_eq!(
            health.last_error.as_deref(),
            Some("transactions[0].currency: not a code")
        );
    }
}
