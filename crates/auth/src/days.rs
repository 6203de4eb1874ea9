//! What the two report stores (DMARC aggregates, TLS reports) share: redb tables keyed
//! `DAY \t ...`, listed by day and forgotten a day at a time.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, Value};

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The days (`YYYY-MM-DD`) that `table` of `db` has keys for, oldest first.
///
/// # Errors
/// The store's error text.
pub(crate) fn days<V: Value + 'static>(
    db: &Database,
    table: TableDefinition<'_, &str, V>,
) -> Result<Vec<String>, String> {
    let tx = db.begin_read().map_err(err)?;
    let Ok(t) = tx.open_table(table) else { return Ok(Vec::new()) };
    let mut days: Vec<String> = Vec::new();
    for entry in t.iter().map_err(err)? {
        let (k, _) = entry.map_err(err)?;
        let day = k.value().split('\t').next().unwrap_or("").to_owned();
        if days.last() != Some(&day) {
            days.push(day);
        }
    }
    Ok(days)
}

/// Removes the keys of `day` from `table` inside the write transaction `tx`.
///
/// # Errors
/// The store's error text.
pub(crate) fn remove<V: Value + 'static>(
    tx: &redb::WriteTransaction,
    table: TableDefinition<'_, &str, V>,
    day: &str,
) -> Result<(), String> {
    let prefix = format!("{day}\t");
    let mut t = tx.open_table(table).map_err(err)?;
    t.retain(|k, _| !k.starts_with(&prefix)).map_err(err)
}
