//! Persistent state behind the [`Registry`] trait: identities, CA certificates, MQTT sessions.
//!
//! The embedded implementation is one SQLite file in WAL mode. Records are stored as the JSON the
//! API serves, keyed by id, so the schema stays stable as fields are added. A PostgreSQL
//! implementation can follow the same trait for scale-out.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ferrohub_runtime::cas::sqlite as ca_sql;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use hub_wire::model::{Device, Module};

use ferrohub_runtime::cas::{CaRecord, CaStore};
use ferrohub_runtime::store::{StoreError, open_durable};

/// A persisted MQTT session: the subscriptions of a client that connected with clean_session=0.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Topic filter and granted QoS.
    pub subscriptions: Vec<(String, u8)>,
}

/// A cloud-to-device message waiting in a device's queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct C2dMessage {
    /// Position in the device's queue (assigned by the store).
    #[serde(default)]
    pub seq: i64,
    pub message_id: String,
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Application properties.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
    /// The body, base64.
    pub body: String,
    pub enqueued_ms: i64,
    pub expiry_ms: i64,
    #[serde(default)]
    pub delivery_count: u32,
    /// Module input messages (fed by a gateway's routes): the input name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Module input messages: system properties by wire name (`$.ct`, `$.cdid`, ...).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub system: std::collections::BTreeMap<String, String>,
}

/// The registry's storage operations (CA certificates: [`CaStore`]). Read-modify-write sequences
/// are serialised by the caller.
pub trait Registry: CaStore + Send + Sync + 'static {
    fn get_device(&self, id: &str) -> Result<Option<Device>, StoreError>;
    fn list_devices(&self) -> Result<Vec<Device>, StoreError>;
    fn put_device(&self, device: &Device) -> Result<(), StoreError>;
    /// Deletes the device, its modules and its session; false when it did not exist.
    fn delete_device(&self, id: &str) -> Result<bool, StoreError>;

    fn get_module(&self, device_id: &str, module_id: &str) -> Result<Option<Module>, StoreError>;
    fn list_modules(&self, device_id: &str) -> Result<Vec<Module>, StoreError>;
    fn put_module(&self, module: &Module) -> Result<(), StoreError>;
    fn delete_module(&self, device_id: &str, module_id: &str) -> Result<bool, StoreError>;
    /// Replaces several devices and modules in one transaction (one commit, one fsync).
    fn put_many(&self, devices: &[Device], modules: &[Module]) -> Result<(), StoreError>;

    fn get_session(&self, client_id: &str) -> Result<Option<SessionRecord>, StoreError>;
    fn put_session(&self, client_id: &str, session: &SessionRecord) -> Result<(), StoreError>;
    fn delete_session(&self, client_id: &str) -> Result<(), StoreError>;

    /// Appends to a device's cloud-to-device queue unless it already holds `max_depth` live
    /// messages; returns the sequence number, or `None` when the queue is full.
    fn c2d_enqueue(
        &self,
        device_id: &str,
        msg: &C2dMessage,
        max_depth: usize,
        now_ms: i64,
    ) -> Result<Option<i64>, StoreError>;
    /// Live messages in queue order (expired ones are removed).
    fn c2d_pending(&self, device_id: &str, now_ms: i64) -> Result<Vec<C2dMessage>, StoreError>;
    /// Counts one more delivery attempt.
    fn c2d_delivered(&self, device_id: &str, seq: i64) -> Result<(), StoreError>;
    /// Removes an acknowledged message.
    fn c2d_complete(&self, device_id: &str, seq: i64) -> Result<(), StoreError>;
    /// Empties a device's queue; returns how many messages were removed.
    fn c2d_purge(&self, device_id: &str) -> Result<usize, StoreError>;

    /// The twin of `device` or `device/module`, if one was ever written.
    fn get_twin(&self, client_id: &str) -> Result<Option<crate::twin::TwinState>, StoreError>;
    fn put_twin(&self, client_id: &str, twin: &crate::twin::TwinState) -> Result<(), StoreError>;

    /// A hub setting changed through the service API (JSON), if one was ever written.
    fn get_setting(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError>;
    fn put_setting(&self, key: &str, value: &serde_json::Value) -> Result<(), StoreError>;
}

/// The embedded SQLite registry.
pub struct SqliteRegistry {
    conn: Mutex<Connection>,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS devices (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS modules (device_id TEXT NOT NULL, module_id TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (device_id, module_id));
CREATE TABLE IF NOT EXISTS sessions (client_id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS c2d (device_id TEXT NOT NULL, seq INTEGER PRIMARY KEY AUTOINCREMENT,
    expiry_ms INTEGER NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS c2d_device ON c2d (device_id, seq);
CREATE TABLE IF NOT EXISTS twins (client_id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, body TEXT NOT NULL);
";

impl SqliteRegistry {
    /// Opens (creating if needed) the registry file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = open_durable(path).map_err(|e| StoreError::from(e).at(path))?;
        conn.execute_batch(SCHEMA)
            .and_then(|()| conn.execute_batch(ca_sql::SCHEMA))
            .map_err(|e| StoreError::from(e).at(path))?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_owned(),
        })
    }

    /// An in-memory registry, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(ca_sql::SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: PathBuf::from(":memory:"),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| StoreError::new("registry lock poisoned"))?;
        f(&conn).map_err(|e| e.at(&self.path))
    }

    fn get<T: for<'de> Deserialize<'de>>(
        &self,
        sql: &str,
        args: &[&str],
    ) -> Result<Option<T>, StoreError> {
        self.with(|c| {
            let body: Option<String> = c
                .prepare_cached(sql)?
                .query_row(rusqlite::params_from_iter(args), |r| r.get(0))
                .optional()?;
            body.map(|b| serde_json::from_str(&b).map_err(StoreError::from))
                .transpose()
        })
    }

    fn list<T: for<'de> Deserialize<'de>>(
        &self,
        sql: &str,
        args: &[&str],
    ) -> Result<Vec<T>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(sql)?;
            let rows =
                stmt.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(0))?;
            rows.map(|b| Ok(serde_json::from_str(&b?)?)).collect()
        })
    }

    fn exec(&self, sql: &str, args: &[&str]) -> Result<usize, StoreError> {
        self.with(|c| {
            Ok(c.prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(args))?)
        })
    }
}

impl CaStore for SqliteRegistry {
    fn get_ca(&self, name: &str) -> Result<Option<CaRecord>, StoreError> {
        self.with(|c| ca_sql::get_ca(c, name))
    }

    fn list_cas(&self) -> Result<Vec<CaRecord>, StoreError> {
        self.with(ca_sql::list_cas)
    }

    fn put_ca(&self, ca: &CaRecord) -> Result<(), StoreError> {
        self.with(|c| ca_sql::put_ca(c, ca))
    }

    fn delete_ca(&self, name: &str) -> Result<bool, StoreError> {
        self.with(|c| ca_sql::delete_ca(c, name))
    }
}

impl Registry for SqliteRegistry {
    fn get_device(&self, id: &str) -> Result<Option<Device>, StoreError> {
        self.get("SELECT body FROM devices WHERE id = ?1", &[id])
    }

    fn list_devices(&self) -> Result<Vec<Device>, StoreError> {
        self.list("SELECT body FROM devices ORDER BY id", &[])
    }

    fn put_device(&self, device: &Device) -> Result<(), StoreError> {
        let body = serde_json::to_string(device)?;
        self.exec(
            "INSERT OR REPLACE INTO devices (id, body) VALUES (?1, ?2)",
            &[&device.device_id, &body],
        )
        .map(drop)
    }

    fn delete_device(&self, id: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let n = tx.execute("DELETE FROM devices WHERE id = ?1", params![id])?;
            tx.execute("DELETE FROM modules WHERE device_id = ?1", params![id])?;
            tx.execute("DELETE FROM c2d WHERE device_id = ?1", params![id])?;
            // The device and its modules (`id/module`), compared exactly: ids may contain the LIKE
            // wildcards `%` and `_`.
            let prefix = format!("{id}/");
            for table in ["twins", "sessions"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE client_id = ?1 OR substr(client_id, 1, length(?2)) = ?2"),
                    params![id, prefix],
                )?;
            }
            tx.commit()?;
            Ok(n > 0)
        })
    }

    fn get_module(&self, device_id: &str, module_id: &str) -> Result<Option<Module>, StoreError> {
        self.get(
            "SELECT body FROM modules WHERE device_id = ?1 AND module_id = ?2",
            &[device_id, module_id],
        )
    }

    fn list_modules(&self, device_id: &str) -> Result<Vec<Module>, StoreError> {
        self.list(
            "SELECT body FROM modules WHERE device_id = ?1 ORDER BY module_id",
            &[device_id],
        )
    }

    fn put_module(&self, module: &Module) -> Result<(), StoreError> {
        let body = serde_json::to_string(module)?;
        self.exec(
            "INSERT OR REPLACE INTO modules (device_id, module_id, body) VALUES (?1, ?2, ?3)",
            &[&module.device_id, &module.module_id, &body],
        )
        .map(drop)
    }

    fn delete_module(&self, device_id: &str, module_id: &str) -> Result<bool, StoreError> {
        let n = self.exec(
            "DELETE FROM modules WHERE device_id = ?1 AND module_id = ?2",
            &[device_id, module_id],
        )?;
        self.delete_session(&format!("{device_id}/{module_id}"))?;
        Ok(n > 0)
    }

    fn put_many(&self, devices: &[Device], modules: &[Module]) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            {
                let mut put_device =
                    tx.prepare_cached("INSERT OR REPLACE INTO devices (id, body) VALUES (?1, ?2)")?;
                for d in devices {
                    put_device.execute(params![d.device_id, serde_json::to_string(d)?])?;
                }
                let mut put_module = tx.prepare_cached(
                    "INSERT OR REPLACE INTO modules (device_id, module_id, body) VALUES (?1, ?2, ?3)",
                )?;
                for m in modules {
                    put_module.execute(params![
                        m.device_id,
                        m.module_id,
                        serde_json::to_string(m)?
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn get_session(&self, client_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.get(
            "SELECT body FROM sessions WHERE client_id = ?1",
            &[client_id],
        )
    }

    fn put_session(&self, client_id: &str, session: &SessionRecord) -> Result<(), StoreError> {
        let body = serde_json::to_string(session)?;
        self.exec(
            "INSERT OR REPLACE INTO sessions (client_id, body) VALUES (?1, ?2)",
            &[client_id, &body],
        )
        .map(drop)
    }

    fn delete_session(&self, client_id: &str) -> Result<(), StoreError> {
        self.exec("DELETE FROM sessions WHERE client_id = ?1", &[client_id])
            .map(drop)
    }

    fn c2d_enqueue(
        &self,
        device_id: &str,
        msg: &C2dMessage,
        max_depth: usize,
        now_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let body = serde_json::to_string(msg)?;
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "DELETE FROM c2d WHERE device_id = ?1 AND expiry_ms <= ?2",
                params![device_id, now_ms],
            )?;
            let depth: i64 = tx.query_row(
                "SELECT COUNT(*) FROM c2d WHERE device_id = ?1",
                params![device_id],
                |r| r.get(0),
            )?;
            if usize::try_from(depth).unwrap_or(usize::MAX) >= max_depth {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO c2d (device_id, expiry_ms, body) VALUES (?1, ?2, ?3)",
                params![device_id, msg.expiry_ms, body],
            )?;
            let seq = tx.last_insert_rowid();
            tx.commit()?;
            Ok(Some(seq))
        })
    }

    fn c2d_pending(&self, device_id: &str, now_ms: i64) -> Result<Vec<C2dMessage>, StoreError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM c2d WHERE device_id = ?1 AND expiry_ms <= ?2",
                params![device_id, now_ms],
            )?;
            let mut stmt =
                c.prepare_cached("SELECT seq, body FROM c2d WHERE device_id = ?1 ORDER BY seq")?;
            let rows = stmt.query_map(params![device_id], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            rows.map(|row| {
                let (seq, body) = row?;
                let mut m: C2dMessage = serde_json::from_str(&body)?;
                m.seq = seq;
                Ok(m)
            })
            .collect()
        })
    }

    fn c2d_delivered(&self, device_id: &str, seq: i64) -> Result<(), StoreError> {
        self.with(|c| {
            let body: Option<String> = c
                .query_row(
                    "SELECT body FROM c2d WHERE device_id = ?1 AND seq = ?2",
                    params![device_id, seq],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(body) = body {
                let mut m: C2dMessage = serde_json::from_str(&body)?;
                m.delivery_count += 1;
                c.execute(
                    "UPDATE c2d SET body = ?1 WHERE seq = ?2",
                    params![serde_json::to_string(&m)?, seq],
                )?;
            }
            Ok(())
        })
    }

    fn c2d_complete(&self, device_id: &str, seq: i64) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM c2d WHERE device_id = ?1 AND seq = ?2",
                params![device_id, seq],
            )?;
            Ok(())
        })
    }

    fn c2d_purge(&self, device_id: &str) -> Result<usize, StoreError> {
        self.with(|c| Ok(c.execute("DELETE FROM c2d WHERE device_id = ?1", params![device_id])?))
    }

    fn get_twin(&self, client_id: &str) -> Result<Option<crate::twin::TwinState>, StoreError> {
        self.get("SELECT body FROM twins WHERE client_id = ?1", &[client_id])
    }

    fn put_twin(&self, client_id: &str, twin: &crate::twin::TwinState) -> Result<(), StoreError> {
        let body = serde_json::to_string(twin)?;
        self.exec(
            "INSERT OR REPLACE INTO twins (client_id, body) VALUES (?1, ?2)",
            &[client_id, &body],
        )
        .map(drop)
    }

    fn get_setting(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.get("SELECT body FROM settings WHERE key = ?1", &[key])
    }

    fn put_setting(&self, key: &str, value: &serde_json::Value) -> Result<(), StoreError> {
        let body = serde_json::to_string(value)?;
        self.exec(
            "INSERT OR REPLACE INTO settings (key, body) VALUES (?1, ?2)",
            &[key, &body],
        )
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_cascades_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.sqlite");
        {
            let r = SqliteRegistry::open(&path).unwrap();
            r.put_device(&Device {
                device_id: "d1".into(),
                ..Default::default()
            })
            .unwrap();
            r.put_module(&Module {
                device_id: "d1".into(),
                module_id: "m1".into(),
                ..Default::default()
            })
            .unwrap();
            r.put_session(
                "d1",
                &SessionRecord {
                    subscriptions: vec![("$iothub/twin/res/#".into(), 1)],
                },
            )
            .unwrap();
            r.put_session("d1/m1", &SessionRecord::default()).unwrap();
        }
        let r = SqliteRegistry::open(&path).unwrap();
        assert_eq!(r.get_device("d1").unwrap().unwrap().device_id, "d1");
        assert_eq!(r.list_modules("d1").unwrap().len(), 1);
        assert_eq!(r.get_session("d1").unwrap().unwrap().subscriptions.len(), 1);
        assert!(r.delete_device("d1").unwrap());
        assert!(!r.delete_device("d1").unwrap());
        assert!(r.list_modules("d1").unwrap().is_empty());
        assert!(r.get_session("d1").unwrap().is_none());
        assert!(r.get_session("d1/m1").unwrap().is_none());
    }

    #[test]
    fn deleting_a_device_whose_id_has_like_wildcards_spares_other_devices() {
        let r = SqliteRegistry::in_memory().unwrap();
        for id in ["a_", "ab", "a%"] {
            r.put_device(&Device {
                device_id: id.into(),
                ..Default::default()
            })
            .unwrap();
            r.put_session(&format!("{id}/m"), &SessionRecord::default())
                .unwrap();
            r.put_twin(&format!("{id}/m"), &crate::twin::TwinState::default())
                .unwrap();
        }
        assert!(r.delete_device("a_").unwrap());
        assert!(r.delete_device("a%").unwrap());
        assert!(r.get_session("a_/m").unwrap().is_none());
        assert!(
            r.get_session("ab/m").unwrap().is_some(),
            "another device's module session survives"
        );
        assert!(
            r.get_twin("ab/m").unwrap().is_some(),
            "another device's module twin survives"
        );
    }
}
