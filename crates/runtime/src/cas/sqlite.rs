//! The `certificates` table of an embedded SQLite database: one row per CA, the [`CaRecord`] as
//! JSON keyed by its (case-sensitive) name. The hub's registry and the provisioning service's
//! database both keep their CAs in it, through these functions, on their own connection.

use rusqlite::{Connection, OptionalExtension as _, params};

use super::CaRecord;
use crate::store::StoreError;

/// Creates the table when missing.
pub const SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS certificates (name TEXT PRIMARY KEY, body TEXT NOT NULL);";

pub fn get_ca(conn: &Connection, name: &str) -> Result<Option<CaRecord>, StoreError> {
    let body: Option<String> = conn
        .prepare_cached("SELECT body FROM certificates WHERE name = ?1")?
        .query_row(params![name], |r| r.get(0))
        .optional()?;
    body.map(|b| serde_json::from_str(&b).map_err(StoreError::from))
        .transpose()
}

pub fn list_cas(conn: &Connection) -> Result<Vec<CaRecord>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT body FROM certificates ORDER BY name")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.map(|b| Ok(serde_json::from_str(&b?)?)).collect()
}

pub fn put_ca(conn: &Connection, ca: &CaRecord) -> Result<(), StoreError> {
    let body = serde_json::to_string(ca)?;
    conn.prepare_cached("INSERT OR REPLACE INTO certificates (name, body) VALUES (?1, ?2)")?
        .execute(params![ca.name, body])?;
    Ok(())
}

pub fn delete_ca(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("DELETE FROM certificates WHERE name = ?1")?
        .execute(params![name])?
        > 0)
}

/// Copies the CAs of the `certificates` table of another database file (an older layout's) into
/// `into`'s, keeping any CA `into` already has by that name; returns how many were copied. A
/// file without the table has none. Run it in the caller's transaction.
pub fn import_cas(into: &Connection, from: &Connection) -> Result<usize, StoreError> {
    let has_table: bool = from
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'certificates')",
            [],
            |r| r.get(0),
        )?;
    if !has_table {
        return Ok(0);
    }
    let mut stmt = from.prepare("SELECT name, body FROM certificates ORDER BY name")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut copied = 0;
    for (name, body) in &rows {
        copied += into.execute(
            "INSERT OR IGNORE INTO certificates (name, body) VALUES (?1, ?2)",
            params![name, body],
        )?;
    }
    Ok(copied)
}
