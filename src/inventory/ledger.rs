//! The stock ledger: every movement of a SKU at a location, numbered, and the running totals
//! (on-hand, reserved, safety stock) written in the same change set as the movement.
//!
//! Concurrency: the movement with number n+1 is written with `Expect::Absent`, so two writers
//! that both read a level after movement n cannot both land; the loser's whole change set is
//! refused and it reads again and retries. The running total therefore never loses an update,
//! and available-to-sell is one read of one record.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::audit::{Action, Actor, Event};
use crate::clock::Clock;
use crate::domain::stock::{MovementKind, StockLevel, StockMovement};
use crate::store::{ChangeSet, Expect, Sealing, Store, StoreError, Table};

use super::InventoryError;
use super::catalog::Catalog;

pub const STOCK_LEVELS: Table = Table::new("stock_levels");
pub const STOCK_MOVES: Table = Table::new("stock_moves");

/// Attempts at a write that lost a race on a ledger before giving up.
pub const RACE_RETRIES: usize = 16;

/// Longest location code (as in `Location::code`).
const MAX_LOCATION: usize = 16;

fn level_key(sku: &str, location: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(sku.len() + location.len() + 1);
    key.extend_from_slice(sku.as_bytes());
    key.push(0);
    key.extend_from_slice(location.as_bytes());
    key
}

fn move_key(sku: &str, location: &str, seq: u64) -> Vec<u8> {
    let mut key = level_key(sku, location);
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Checks a location code: 1 to 16 letters, digits or dashes; returned upper-case.
pub fn check_location(field: &str, code: &str) -> Result<String, InventoryError> {
    let code = code.trim().to_uppercase();
    if code.is_empty()
        || code.len() > MAX_LOCATION
        || !code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(InventoryError::invalid(
            field,
            format!("{code:?} is not a location code (1 to 16 letters, digits or dashes)"),
        ));
    }
    Ok(code)
}

/// Levels touched by a change set being built, so several movements of the same SKU and
/// location in one set build on each other.
#[derive(Debug, Default)]
pub struct Pending {
    levels: HashMap<(String, String), StockLevel>,
}

/// A movement asked for by the ERP, a person or a count (not a sale).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MovementInput {
    pub sku: String,
    pub location: String,
    /// `receipt`, `adjustment` (signed), `count` (the counted quantity) or `transfer`.
    pub kind: MovementKind,
    /// Thousandths of a unit: positive for receipts and transfers, signed for adjustments,
    /// the counted on-hand for counts.
    pub quantity_milli: i64,
    /// Where a transfer goes.
    #[serde(default)]
    pub to_location: Option<String>,
    /// The document behind it (receipt number, count id).
    #[serde(default)]
    pub reference: String,
}

/// The ledger service; cheap to clone.
#[derive(Debug, Clone)]
pub struct Ledger {
    store: Store,
    clock: Arc<dyn Clock>,
    catalog: Catalog,
}

impl Ledger {
    #[must_use]
    pub fn new(store: Store, clock: Arc<dyn Clock>, catalog: Catalog) -> Self {
        Self {
            store,
            clock,
            catalog,
        }
    }

    /// The running totals of a SKU at a location (all zero when nothing moved yet).
    pub fn level(&self, sku: &str, location: &str) -> Result<StockLevel, InventoryError> {
        Ok(self
            .store
            .get_json::<StockLevel>(STOCK_LEVELS, &level_key(sku, location))?
            .unwrap_or_else(|| StockLevel {
                sku: sku.to_owned(),
                location: location.to_owned(),
                ..StockLevel::default()
            }))
    }

    /// Every location a SKU has moved at, by location code.
    pub fn levels_of(&self, sku: &str) -> Result<Vec<StockLevel>, InventoryError> {
        let mut prefix = sku.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for entry in self.store.scan(STOCK_LEVELS, &prefix) {
            let (_, bytes) = entry?;
            out.push(decode::<StockLevel>(&bytes, "stock_levels")?);
        }
        Ok(out)
    }

    /// The newest movements of a SKU at every location, newest first.
    // Limitation: reads every movement of the SKU to pick the newest; a SKU with hundreds of
    // thousands of movements makes its product page slow.
    pub fn recent_movements(
        &self,
        sku: &str,
        limit: usize,
    ) -> Result<Vec<StockMovement>, InventoryError> {
        let mut prefix = sku.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for entry in self.store.scan(STOCK_MOVES, &prefix) {
            let (_, bytes) = entry?;
            // A change of reserves takes a number without a movement (stored as `null`).
            if let Some(movement) = decode::<Option<StockMovement>>(&bytes, "stock_moves")? {
                out.push(movement);
            }
        }
        out.sort_by(|a, b| b.at.cmp(&a.at).then(b.seq.cmp(&a.seq)));
        out.truncate(limit);
        Ok(out)
    }

    /// Stages one movement and its effect on the running total. `quantity_milli` is the
    /// signed change, except for a count, where it is the counted on-hand.
    #[allow(clippy::too_many_arguments)] // a movement's parts, named at every call
    pub fn stage(
        &self,
        set: &mut ChangeSet,
        pending: &mut Pending,
        sku: &str,
        location: &str,
        kind: MovementKind,
        quantity_milli: i64,
        reference: &str,
        unknown_sku: bool,
        at: Timestamp,
    ) -> Result<StockMovement, InventoryError> {
        let slot = (sku.to_owned(), location.to_owned());
        let level = match pending.levels.get_mut(&slot) {
            Some(level) => level,
            None => {
                let level = self.level(sku, location)?;
                pending.levels.entry(slot).or_insert(level)
            }
        };
        let change = if kind == MovementKind::Count {
            quantity_milli - level.on_hand_milli
        } else {
            quantity_milli
        };
        level.on_hand_milli = level
            .on_hand_milli
            .checked_add(change)
            .ok_or_else(|| InventoryError::invalid("quantity", "the on-hand would overflow"))?;
        level.movements += 1;
        level.updated_at = Some(at);
        level.unknown_sku |= unknown_sku;
        let movement = StockMovement {
            seq: level.movements,
            sku: sku.to_owned(),
            location: location.to_owned(),
            kind,
            quantity_milli: change,
            on_hand_after: level.on_hand_milli,
            at,
            reference: reference.to_owned(),
            unknown_sku,
        };
        set.put_with(
            STOCK_MOVES,
            move_key(sku, location, movement.seq),
            Store::json(&movement)?,
            Sealing::DataKey,
            Expect::Absent,
        );
        Ok(movement)
    }

    /// Writes the running totals of every level staged (once per level, after its movements).
    pub fn finish(pending: Pending, set: &mut ChangeSet) -> Result<(), InventoryError> {
        for ((sku, location), level) in pending.levels {
            set.put(
                STOCK_LEVELS,
                level_key(&sku, &location),
                Store::json(&level)?,
            );
        }
        Ok(())
    }

    /// Records a receipt, adjustment, count or transfer, with its `inventory.moved` entry;
    /// retries when a concurrent movement of the same SKU and location got there first.
    pub async fn record(
        &self,
        input: &MovementInput,
        actor: Actor,
    ) -> Result<Vec<StockMovement>, InventoryError> {
        let (sku, location, reference, to) = checked(input)?;
        let reference = reference.as_str();
        let unknown = self.catalog.get(&sku)?.is_none();
        for _ in 0..RACE_RETRIES {
            let at = self.clock.now();
            let mut set = ChangeSet::new();
            let mut pending = Pending::default();
            let mut moved = Vec::new();
            let out = if input.kind == MovementKind::Transfer {
                -input.quantity_milli
            } else {
                input.quantity_milli
            };
            moved.push(self.stage(
                &mut set,
                &mut pending,
                &sku,
                &location,
                input.kind,
                out,
                reference,
                unknown,
                at,
            )?);
            if let Some(to) = &to {
                moved.push(self.stage(
                    &mut set,
                    &mut pending,
                    &sku,
                    to,
                    MovementKind::Transfer,
                    input.quantity_milli,
                    reference,
                    unknown,
                    at,
                )?);
            }
            Self::finish(pending, &mut set)?;
            Event::new(Action::StockMoved)
                .by(actor.clone())
                .target("product", &sku)
                .reason(format!("{} at {location}", input.kind.as_str()))
                .add_to(&mut set);
            match self.store.commit(set).await {
                Ok(()) => return Ok(moved),
                Err(StoreError::Conflict { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Err(InventoryError::Contended {
            what: "the stock level",
            attempts: RACE_RETRIES,
        })
    }

    /// Sets the reserved quantity and the safety stock of a SKU at a location.
    pub async fn set_reserves(
        &self,
        sku: &str,
        location: &str,
        reserved_milli: i64,
        safety_milli: i64,
        actor: Actor,
    ) -> Result<StockLevel, InventoryError> {
        let sku = crate::domain::product::check_sku("sku", sku)
            .map_err(|e| InventoryError::Invalid(vec![e]))?;
        let location = check_location("location", location)?;
        for (field, value) in [
            ("reserved_milli", reserved_milli),
            ("safety_milli", safety_milli),
        ] {
            if value < 0 {
                return Err(InventoryError::invalid(
                    field,
                    format!("{value} is negative"),
                ));
            }
        }
        for _ in 0..RACE_RETRIES {
            let mut level = self.level(&sku, &location)?;
            level.reserved_milli = reserved_milli;
            level.safety_milli = safety_milli;
            // Taking the next movement number (without a movement) orders this change against
            // concurrent movements, so neither overwrites the other's totals.
            level.movements += 1;
            level.updated_at = Some(self.clock.now());
            let mut set = ChangeSet::new();
            set.put_with(
                STOCK_MOVES,
                move_key(&sku, &location, level.movements),
                Store::json(&serde_json::Value::Null)?,
                Sealing::DataKey,
                Expect::Absent,
            );
            set.put(
                STOCK_LEVELS,
                level_key(&sku, &location),
                Store::json(&level)?,
            );
            Event::new(Action::StockMoved)
                .by(actor.clone())
                .target("product", &sku)
                .reason(format!("reserves at {location}"))
                .fields(["reserved_milli", "safety_milli"])
                .add_to(&mut set);
            match self.store.commit(set).await {
                Ok(()) => return Ok(level),
                Err(StoreError::Conflict { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Err(InventoryError::Contended {
            what: "the stock level",
            attempts: RACE_RETRIES,
        })
    }
}

/// A movement input's SKU, location, reference and destination, checked.
fn checked(
    input: &MovementInput,
) -> Result<(String, String, String, Option<String>), InventoryError> {
    let sku = crate::domain::product::check_sku("sku", &input.sku)
        .map_err(|e| InventoryError::Invalid(vec![e]))?;
    let location = check_location("location", &input.location)?;
    let reference = input.reference.trim().to_owned();
    if reference.chars().count() > 100 || reference.chars().any(char::is_control) {
        return Err(InventoryError::invalid(
            "reference",
            "at most 100 characters, no control characters",
        ));
    }
    let to = match (input.kind, &input.to_location) {
        (MovementKind::Transfer, Some(to)) => Some(check_location("to_location", to)?),
        (MovementKind::Transfer, None) => {
            return Err(InventoryError::invalid(
                "to_location",
                "a transfer needs the location it goes to",
            ));
        }
        (_, Some(_)) => {
            return Err(InventoryError::invalid(
                "to_location",
                "only a transfer goes to another location",
            ));
        }
        (_, None) => None,
    };
    match input.kind {
        MovementKind::Sale | MovementKind::Return => {
            return Err(InventoryError::invalid(
                "kind",
                "sales and returns come from the registers (POST /api/v1/pos/transactions)",
            ));
        }
        MovementKind::Receipt | MovementKind::Transfer if input.quantity_milli <= 0 => {
            return Err(InventoryError::invalid(
                "quantity_milli",
                format!("{} is not a positive quantity", input.quantity_milli),
            ));
        }
        MovementKind::Count if input.quantity_milli < 0 => {
            return Err(InventoryError::invalid(
                "quantity_milli",
                format!("a count of {} is negative", input.quantity_milli),
            ));
        }
        _ => {}
    }
    if to.as_deref() == Some(location.as_str()) {
        return Err(InventoryError::invalid(
            "to_location",
            "a transfer goes to another location",
        ));
    }
    Ok((sku, location, reference, to))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], table: &str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Decode(format!("{table}: {err}")))
}
