//! Schema migrations that run completely or not at all.
//!
//! Each step copies the database into `db.migrating`, transforming it, records the new schema
//! version there, and only then swaps folders: `db` becomes `db.previous`, `db.migrating`
//! becomes `db`, and `db.previous` is removed. [`recover`] runs before every open and puts a
//! store back in one piece after a crash at any point of that sequence.

use std::path::{Path, PathBuf};

use super::{StoreError, open_sled};

/// One schema step.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The schema version this step produces; steps run in order of `to`.
    pub to: u32,
    pub name: &'static str,
    /// Copies `old` into the empty `new`, transforming what the step changes.
    pub apply: fn(old: &sled::Db, new: &sled::Db) -> Result<(), String>,
}

/// The migrations of this binary. Schema 1 is the first; each later version appends a step.
pub const MIGRATIONS: &[Migration] = &[Migration {
    to: 2,
    // Nothing stored changes: from schema 2 a log record may hold several entries (see
    // `store::log`), which a binary of schema 1 would misread, so the version says so.
    name: "audit records that hold several entries",
    apply: copy_all,
}];

fn sibling(db_dir: &Path, suffix: &str) -> PathBuf {
    let mut name = db_dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    db_dir.with_file_name(name)
}

/// Repairs the folders after a crash during a migration: an unfinished copy is dropped, and a
/// swap cut in the middle is completed backwards (the old store comes back).
pub fn recover(db_dir: &Path) -> Result<(), StoreError> {
    let migrating = sibling(db_dir, ".migrating");
    let previous = sibling(db_dir, ".previous");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Io { path, source }
    };
    if !db_dir.exists() && previous.exists() {
        std::fs::rename(&previous, db_dir).map_err(io(&previous))?;
    }
    if migrating.exists() {
        std::fs::remove_dir_all(&migrating).map_err(io(&migrating))?;
    }
    if previous.exists() {
        std::fs::remove_dir_all(&previous).map_err(io(&previous))?;
    }
    Ok(())
}

/// Copies every tree of `old` into `new` unchanged; the usual start of a step.
pub fn copy_all(old: &sled::Db, new: &sled::Db) -> Result<(), String> {
    for name in old.tree_names() {
        let from = old.open_tree(&name).map_err(|e| e.to_string())?;
        let to = new.open_tree(&name).map_err(|e| e.to_string())?;
        for entry in &from {
            let (key, value) = entry.map_err(|e| e.to_string())?;
            to.insert(key, value).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Runs every step from `from` up to `target`.
pub fn upgrade(
    db_dir: &Path,
    from: u32,
    target: u32,
    migrations: &[Migration],
    cache_mib: u64,
) -> Result<(), StoreError> {
    let mut version = from;
    for step in migrations.iter().filter(|m| m.to > from && m.to <= target) {
        run_step(db_dir, version, step, cache_mib)?;
        version = step.to;
    }
    if version != target {
        return Err(StoreError::Migration {
            from: version,
            to: target,
            name: "missing step",
            reason: format!("this binary has no migration from schema {version}"),
        });
    }
    Ok(())
}

fn run_step(db_dir: &Path, from: u32, step: &Migration, cache_mib: u64) -> Result<(), StoreError> {
    let failed = |reason: String| StoreError::Migration {
        from,
        to: step.to,
        name: step.name,
        reason,
    };
    let migrating = sibling(db_dir, ".migrating");
    let previous = sibling(db_dir, ".previous");
    if migrating.exists() {
        std::fs::remove_dir_all(&migrating).map_err(|e| failed(e.to_string()))?;
    }

    let copied = (|| {
        let old = open_sled(db_dir, cache_mib)?;
        let new = open_sled(&migrating, cache_mib)?;
        (step.apply)(&old, &new).map_err(failed)?;
        let meta = new.open_tree("meta")?;
        meta.insert(super::META_SCHEMA, &step.to.to_be_bytes())?;
        // The note keeps the version the store had before the first step not yet recorded.
        let first =
            super::migration_note(&old.open_tree("meta")?)?.map_or(from, |(first, _)| first);
        meta.insert(
            super::META_MIGRATED,
            format!("{first} {}", step.to).as_bytes(),
        )?;
        new.flush()?;
        Ok::<(), StoreError>(())
    })();
    if let Err(err) = copied {
        let _ = std::fs::remove_dir_all(&migrating);
        return Err(err);
    }

    std::fs::rename(db_dir, &previous).map_err(|e| failed(e.to_string()))?;
    std::fs::rename(&migrating, db_dir).map_err(|e| failed(e.to_string()))?;
    super::files::sync_dir(db_dir).map_err(|e| failed(e.to_string()))?;
    std::fs::remove_dir_all(&previous).map_err(|e| failed(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_v1(dir: &Path) {
        let db = open_sled(dir, 8).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert(super::super::META_SCHEMA, &1u32.to_be_bytes())
            .unwrap();
        db.open_tree("data").unwrap().insert(b"k", b"v").unwrap();
        db.flush().unwrap();
    }

    fn version(dir: &Path) -> u32 {
        let db = open_sled(dir, 8).unwrap();
        let raw = db
            .open_tree("meta")
            .unwrap()
            .get(super::super::META_SCHEMA)
            .unwrap()
            .unwrap();
        u32::from_be_bytes(raw.as_ref().try_into().unwrap())
    }

    #[test]
    fn a_step_runs_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let db_dir = tmp.path().join("db");
        make_v1(&db_dir);
        let steps = [Migration {
            to: 2,
            name: "add marker",
            apply: |old, new| {
                copy_all(old, new)?;
                new.open_tree("data")
                    .map_err(|e| e.to_string())?
                    .insert(b"marker", b"2")
                    .map_err(|e| e.to_string())?;
                Ok(())
            },
        }];
        upgrade(&db_dir, 1, 2, &steps, 8).unwrap();
        assert_eq!(version(&db_dir), 2);
        let db = open_sled(&db_dir, 8).unwrap();
        let data = db.open_tree("data").unwrap();
        assert_eq!(data.get(b"k").unwrap().unwrap().as_ref(), b"v");
        assert!(data.get(b"marker").unwrap().is_some());
    }

    #[test]
    fn a_failing_step_leaves_the_store_as_it_was() {
        let tmp = tempfile::tempdir().unwrap();
        let db_dir = tmp.path().join("db");
        make_v1(&db_dir);
        let steps = [Migration {
            to: 2,
            name: "breaks half-way",
            apply: |old, new| {
                copy_all(old, new)?;
                Err("disk said no".into())
            },
        }];
        let err = upgrade(&db_dir, 1, 2, &steps, 8).unwrap_err();
        assert!(err.to_string().contains("unchanged at schema 1"), "{err}");
        assert_eq!(version(&db_dir), 1);
        assert!(!sibling(&db_dir, ".migrating").exists());
    }

    #[test]
    fn recover_puts_back_a_cut_swap() {
        let tmp = tempfile::tempdir().unwrap();
        let db_dir = tmp.path().join("db");
        make_v1(&db_dir);
        std::fs::rename(&db_dir, sibling(&db_dir, ".previous")).unwrap();
        std::fs::create_dir_all(sibling(&db_dir, ".migrating")).unwrap();
        recover(&db_dir).unwrap();
        assert_eq!(version(&db_dir), 1);
        assert!(!sibling(&db_dir, ".migrating").exists());
    }
}
