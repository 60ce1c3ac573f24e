//! SQLite storage of enrollments, enrollment groups and registration records, as JSON documents
//! keyed by id (registration ids lowercase: they are case-insensitive).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension as _, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::{EnrollmentGroup, IndividualEnrollment, RegistrationState};

/// A storage failure, as the hub's store reports it (a full disk is told apart: 507).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub hub::store::StoreError);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self(e.into())
    }
}
impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self(hub::store::StoreError::new(format!("corrupt record: {e}")))
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS enrollments (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS groups (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS registrations (id TEXT PRIMARY KEY, body TEXT NOT NULL);
";

/// The three tables; every write is one durable transaction.
pub struct DpsStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

#[derive(Clone, Copy)]
enum Table {
    Enrollments,
    Groups,
    Registrations,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Self::Enrollments => "enrollments",
            Self::Groups => "groups",
            Self::Registrations => "registrations",
        }
    }
}

impl DpsStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = hub::store::open_durable(path)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_owned(),
        })
    }

    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
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
            .map_err(|_| StoreError(hub::store::StoreError::new("database lock poisoned")))?;
        f(&conn).map_err(|e| StoreError(e.0.at(&self.path)))
    }

    fn get<T: DeserializeOwned>(&self, t: Table, id: &str) -> Result<Option<T>, StoreError> {
        let sql = format!("SELECT body FROM {} WHERE id = ?1", t.name());
        let body: Option<String> = self.with(|c| {
            Ok(c.query_row(&sql, params![id.to_lowercase()], |r| r.get(0))
                .optional()?)
        })?;
        body.map(|b| serde_json::from_str(&b).map_err(StoreError::from))
            .transpose()
    }

    fn put<T: Serialize>(&self, t: Table, id: &str, value: &T) -> Result<(), StoreError> {
        let body = serde_json::to_string(value)?;
        let sql = format!(
            "INSERT OR REPLACE INTO {} (id, body) VALUES (?1, ?2)",
            t.name()
        );
        self.with(|c| {
            Ok(c.execute(&sql, params![id.to_lowercase(), body])
                .map(drop)?)
        })
    }

    fn delete(&self, t: Table, id: &str) -> Result<bool, StoreError> {
        let sql = format!("DELETE FROM {} WHERE id = ?1", t.name());
        self.with(|c| Ok(c.execute(&sql, params![id.to_lowercase()])? > 0))
    }

    fn list<T: DeserializeOwned>(&self, t: Table) -> Result<Vec<T>, StoreError> {
        let sql = format!("SELECT body FROM {} ORDER BY id", t.name());
        let bodies: Vec<String> = self.with(|c| {
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })?;
        bodies
            .iter()
            .map(|b| serde_json::from_str(b).map_err(StoreError::from))
            .collect()
    }

    pub fn get_enrollment(&self, id: &str) -> Result<Option<IndividualEnrollment>, StoreError> {
        self.get(Table::Enrollments, id)
    }
    pub fn put_enrollment(&self, e: &IndividualEnrollment) -> Result<(), StoreError> {
        self.put(Table::Enrollments, &e.registration_id, e)
    }
    pub fn delete_enrollment(&self, id: &str) -> Result<bool, StoreError> {
        self.delete(Table::Enrollments, id)
    }
    pub fn list_enrollments(&self) -> Result<Vec<IndividualEnrollment>, StoreError> {
        self.list(Table::Enrollments)
    }

    pub fn get_group(&self, id: &str) -> Result<Option<EnrollmentGroup>, StoreError> {
        self.get(Table::Groups, id)
    }
    pub fn put_group(&self, g: &EnrollmentGroup) -> Result<(), StoreError> {
        self.put(Table::Groups, &g.enrollment_group_id, g)
    }
    pub fn delete_group(&self, id: &str) -> Result<bool, StoreError> {
        self.delete(Table::Groups, id)
    }
    pub fn list_groups(&self) -> Result<Vec<EnrollmentGroup>, StoreError> {
        self.list(Table::Groups)
    }

    pub fn get_registration(&self, id: &str) -> Result<Option<RegistrationState>, StoreError> {
        self.get(Table::Registrations, id)
    }
    pub fn put_registration(&self, r: &RegistrationState) -> Result<(), StoreError> {
        self.put(Table::Registrations, &r.registration_id, r)
    }
    pub fn delete_registration(&self, id: &str) -> Result<bool, StoreError> {
        self.delete(Table::Registrations, id)
    }
    pub fn list_registrations(&self) -> Result<Vec<RegistrationState>, StoreError> {
        self.list(Table::Registrations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Settings;

    #[test]
    fn records_are_found_case_insensitively_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dps.sqlite");
        {
            let s = DpsStore::open(&path).unwrap();
            s.put_enrollment(&IndividualEnrollment {
                registration_id: "Dev-1".into(),
                device_id: None,
                registration_state: None,
                optional_device_information: None,
                settings: Settings::default(),
            })
            .unwrap();
        }
        let s = DpsStore::open(&path).unwrap();
        assert_eq!(
            s.get_enrollment("dev-1").unwrap().unwrap().registration_id,
            "Dev-1"
        );
        assert_eq!(s.list_enrollments().unwrap().len(), 1);
        assert!(s.delete_enrollment("DEV-1").unwrap());
        assert!(s.get_enrollment("dev-1").unwrap().is_none());
        assert!(!s.delete_enrollment("dev-1").unwrap());
    }
}
