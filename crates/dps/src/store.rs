//! The provisioning service's storage behind the [`DpsStore`] trait: enrollments, enrollment
//! groups, registration records and CA certificates ([`CaStore`]).
//!
//! The embedded implementation, [`SqliteDpsStore`], is one SQLite file (WAL, every commit
//! fsync'ed): JSON documents keyed by id (registration ids lowercase: they are
//! case-insensitive), and the CAs in the same `certificates` table the hub's registry has. The
//! trait is synchronous like the hub's `Registry`; it becomes async with the PostgreSQL backend
//! (issue 26).
//!
//! Earlier versions kept the CAs in a second file beside the database, a whole hub registry
//! (`dps.sqlite` → `dps.certificates.sqlite`); [`SqliteDpsStore::open`] copies its CAs in once.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ferrohub_runtime::cas::sqlite as ca_sql;
use ferrohub_runtime::cas::{CaRecord, CaStore};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::{EnrollmentGroup, IndividualEnrollment, RegistrationState};

/// A storage failure, as every server's store reports it (a full disk is told apart: 507).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub ferrohub_runtime::store::StoreError);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self(e.into())
    }
}
impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self(ferrohub_runtime::store::StoreError::new(format!(
            "corrupt record: {e}"
        )))
    }
}
impl From<ferrohub_runtime::store::StoreError> for StoreError {
    fn from(e: ferrohub_runtime::store::StoreError) -> Self {
        Self(e)
    }
}

/// The provisioning service's storage operations (CA certificates: [`CaStore`]). Ids are
/// case-insensitive. Read-modify-write sequences are serialised by the caller.
pub trait DpsStore: CaStore + Send + Sync + 'static {
    fn get_enrollment(&self, id: &str) -> Result<Option<IndividualEnrollment>, StoreError>;
    /// Creates or replaces the enrollment of `e.registration_id`.
    fn put_enrollment(&self, e: &IndividualEnrollment) -> Result<(), StoreError>;
    /// False when there was none.
    fn delete_enrollment(&self, id: &str) -> Result<bool, StoreError>;
    fn list_enrollments(&self) -> Result<Vec<IndividualEnrollment>, StoreError>;

    fn get_group(&self, id: &str) -> Result<Option<EnrollmentGroup>, StoreError>;
    /// Creates or replaces the group of `g.enrollment_group_id`.
    fn put_group(&self, g: &EnrollmentGroup) -> Result<(), StoreError>;
    fn delete_group(&self, id: &str) -> Result<bool, StoreError>;
    fn list_groups(&self) -> Result<Vec<EnrollmentGroup>, StoreError>;

    fn get_registration(&self, id: &str) -> Result<Option<RegistrationState>, StoreError>;
    /// Creates or replaces the record of `r.registration_id`.
    fn put_registration(&self, r: &RegistrationState) -> Result<(), StoreError>;
    fn delete_registration(&self, id: &str) -> Result<bool, StoreError>;
    fn list_registrations(&self) -> Result<Vec<RegistrationState>, StoreError>;
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS enrollments (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS groups (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS registrations (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

/// The `meta` key recording that the CAs of the earlier separate file were copied in.
const CAS_IMPORTED: &str = "certificates_imported_from";

/// The embedded SQLite store; every write is one durable transaction.
pub struct SqliteDpsStore {
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

/// Where earlier versions kept the provisioning service's CAs: a hub registry file beside the
/// database (`dps.sqlite` → `dps.certificates.sqlite`).
pub fn legacy_ca_path(database: &Path) -> PathBuf {
    database.with_extension("certificates.sqlite")
}

impl SqliteDpsStore {
    /// Opens (creating if needed) the database, private, and copies in the CAs of an earlier
    /// version's separate CA file the first time it finds one.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = ferrohub_runtime::store::open_durable(path)?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(ca_sql::SCHEMA)?;
        import_legacy_cas(&mut conn, path).map_err(|e| StoreError(e.0.at(path)))?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_owned(),
        })
    }

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
        let conn = self.conn.lock().map_err(|_| {
            StoreError(ferrohub_runtime::store::StoreError::new(
                "database lock poisoned",
            ))
        })?;
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
}

impl CaStore for SqliteDpsStore {
    fn get_ca(&self, name: &str) -> Result<Option<CaRecord>, ferrohub_runtime::store::StoreError> {
        self.with(|c| Ok(ca_sql::get_ca(c, name)?)).map_err(|e| e.0)
    }
    fn list_cas(&self) -> Result<Vec<CaRecord>, ferrohub_runtime::store::StoreError> {
        self.with(|c| Ok(ca_sql::list_cas(c)?)).map_err(|e| e.0)
    }
    fn put_ca(&self, ca: &CaRecord) -> Result<(), ferrohub_runtime::store::StoreError> {
        self.with(|c| Ok(ca_sql::put_ca(c, ca)?)).map_err(|e| e.0)
    }
    fn delete_ca(&self, name: &str) -> Result<bool, ferrohub_runtime::store::StoreError> {
        self.with(|c| Ok(ca_sql::delete_ca(c, name)?))
            .map_err(|e| e.0)
    }
}

impl DpsStore for SqliteDpsStore {
    fn get_enrollment(&self, id: &str) -> Result<Option<IndividualEnrollment>, StoreError> {
        self.get(Table::Enrollments, id)
    }
    fn put_enrollment(&self, e: &IndividualEnrollment) -> Result<(), StoreError> {
        self.put(Table::Enrollments, &e.registration_id, e)
    }
    fn delete_enrollment(&self, id: &str) -> Result<bool, StoreError> {
        self.delete(Table::Enrollments, id)
    }
    fn list_enrollments(&self) -> Result<Vec<IndividualEnrollment>, StoreError> {
        self.list(Table::Enrollments)
    }

    fn get_group(&self, id: &str) -> Result<Option<EnrollmentGroup>, StoreError> {
        self.get(Table::Groups, id)
    }
    fn put_group(&self, g: &EnrollmentGroup) -> Result<(), StoreError> {
        self.put(Table::Groups, &g.enrollment_group_id, g)
    }
    fn delete_group(&self, id: &str) -> Result<bool, StoreError> {
        self.delete(Table::Groups, id)
    }
    fn list_groups(&self) -> Result<Vec<EnrollmentGroup>, StoreError> {
        self.list(Table::Groups)
    }

    fn get_registration(&self, id: &str) -> Result<Option<RegistrationState>, StoreError> {
        self.get(Table::Registrations, id)
    }
    fn put_registration(&self, r: &RegistrationState) -> Result<(), StoreError> {
        self.put(Table::Registrations, &r.registration_id, r)
    }
    fn delete_registration(&self, id: &str) -> Result<bool, StoreError> {
        self.delete(Table::Registrations, id)
    }
    fn list_registrations(&self) -> Result<Vec<RegistrationState>, StoreError> {
        self.list(Table::Registrations)
    }
}

/// Copies the CAs of [`legacy_ca_path`] into `conn`'s `certificates` table, once: a `meta` row
/// records it, so a CA deleted afterwards is not brought back. The old file is left as it was
/// (an older version started on this directory still finds its CAs there).
fn import_legacy_cas(conn: &mut Connection, database: &Path) -> Result<(), StoreError> {
    let old = legacy_ca_path(database);
    if !old.exists() {
        return Ok(());
    }
    let done: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM meta WHERE key = ?1)",
        params![CAS_IMPORTED],
        |r| r.get(0),
    )?;
    if done {
        return Ok(());
    }
    let from = Connection::open_with_flags(&old, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| StoreError(ferrohub_runtime::store::StoreError::from(e).at(&old)))?;
    let tx = conn.transaction()?;
    let copied = ca_sql::import_cas(&tx, &from).map_err(|e| StoreError(e.at(&old)))?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)",
        params![CAS_IMPORTED, old.display().to_string()],
    )?;
    tx.commit()?;
    tracing::info!(
        from = %old.display(),
        into = %database.display(),
        copied,
        "CA certificates of the earlier separate file copied into the provisioning database; \
         the old file is no longer used"
    );
    Ok(())
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
            let s = SqliteDpsStore::open(&path).unwrap();
            s.put_enrollment(&IndividualEnrollment {
                registration_id: "Dev-1".into(),
                device_id: None,
                registration_state: None,
                optional_device_information: None,
                settings: Settings::default(),
            })
            .unwrap();
        }
        let s = SqliteDpsStore::open(&path).unwrap();
        assert_eq!(
            s.get_enrollment("dev-1").unwrap().unwrap().registration_id,
            "Dev-1"
        );
        assert_eq!(s.list_enrollments().unwrap().len(), 1);
        assert!(s.delete_enrollment("DEV-1").unwrap());
        assert!(s.get_enrollment("dev-1").unwrap().is_none());
        assert!(!s.delete_enrollment("dev-1").unwrap());
    }

    fn ca(name: &str, verified: bool) -> CaRecord {
        CaRecord {
            name: name.into(),
            etag: format!("etag-{name}"),
            certificate: format!("PEM of {name}"),
            subject: format!("CN={name}"),
            thumbprint: "AB".repeat(20),
            expiry: "2030-01-01T00:00:00Z".into(),
            is_verified: verified,
            created: "2024-01-01T00:00:00Z".into(),
            updated: "2024-01-02T00:00:00Z".into(),
            verification_code: None,
            verification_code_expiry: None,
        }
    }

    #[test]
    fn cas_of_the_earlier_separate_file_are_copied_in_once() {
        use hub::store::Registry as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dps.sqlite");
        let legacy = dir.path().join("dps.certificates.sqlite");
        assert_eq!(legacy_ca_path(&path), legacy);
        // What an earlier version left: its enrollments database and a hub registry of CAs.
        drop(SqliteDpsStore::open(&path).unwrap());
        {
            let old = hub::store::SqliteRegistry::open(&legacy).unwrap();
            old.put_ca(&ca("root", true)).unwrap();
            old.put_ca(&ca("Pending", false)).unwrap();
            assert_eq!(old.list_devices().unwrap().len(), 0);
        }
        let s = SqliteDpsStore::open(&path).unwrap();
        assert_eq!(s.get_ca("root").unwrap(), Some(ca("root", true)));
        assert_eq!(s.get_ca("Pending").unwrap(), Some(ca("Pending", false)));
        assert_eq!(
            s.get_ca("pending").unwrap(),
            None,
            "CA names are case-sensitive"
        );
        assert!(s.delete_ca("root").unwrap());
        drop(s);
        // Reopened: the deleted CA is not copied in again.
        let s = SqliteDpsStore::open(&path).unwrap();
        let names: Vec<String> = s.list_cas().unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["Pending"]);
    }

    #[test]
    fn a_new_database_keeps_its_cas_in_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dps.sqlite");
        {
            let s = SqliteDpsStore::open(&path).unwrap();
            s.put_ca(&ca("root", true)).unwrap();
        }
        assert!(!legacy_ca_path(&path).exists(), "no second file");
        let s = SqliteDpsStore::open(&path).unwrap();
        assert_eq!(s.list_cas().unwrap(), [ca("root", true)]);
    }
}
