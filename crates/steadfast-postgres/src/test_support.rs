//! Fresh databases on a test PostgreSQL server, for this crate's tests and
//! for other crates' tests that run against both backends.
//!
//! `STEADFAST_TEST_POSTGRES_URL` names a superuser connection to a server
//! that trusts local connections; `scripts/test.sh` starts a private one.
//! Each call creates a new database owned by a test owner role, migrates it,
//! and connects as a test application role, exactly as production does.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio_postgres::NoTls;

use crate::{PostgresStore, schema};

/// The owning role of test databases (runs migrations; never used by the store).
pub const OWNER_ROLE: &str = "steadfast_test_owner";
/// The role the store connects as: not owner, not superuser, not BYPASSRLS.
pub const APP_ROLE: &str = "steadfast_test_app";

/// A test database; its URLs for the owner and the application role.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    pub name: String,
    pub owner_url: String,
    pub app_url: String,
    pub admin_url: String,
}

fn admin_url() -> String {
    std::env::var("STEADFAST_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "STEADFAST_TEST_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts a private \
             PostgreSQL server, or point it at a superuser connection of a throwaway server"
        )
    })
}

/// `url` with its user and database replaced.
fn with_user_and_db(url: &str, user: &str, db: &str) -> String {
    let mut config: url_parts::Parts = url_parts::Parts::parse(url);
    config.user = user.to_owned();
    config.db = db.to_owned();
    config.render()
}

mod url_parts {
    /// Just enough URL handling for `postgres://user@host:port/db?params`.
    pub struct Parts {
        pub user: String,
        pub host: String,
        pub db: String,
        pub query: String,
    }

    impl Parts {
        pub fn parse(url: &str) -> Parts {
            let rest = url
                .strip_prefix("postgres://")
                .or_else(|| url.strip_prefix("postgresql://"))
                .expect("a postgres:// URL");
            let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
            let (authority, db) = rest.split_once('/').unwrap_or((rest, "postgres"));
            let (user, host) = authority.rsplit_once('@').unwrap_or(("postgres", authority));
            let user = user.split(':').next().unwrap_or("postgres");
            Parts {
                user: user.to_owned(),
                host: host.to_owned(),
                db: db.to_owned(),
                query: query.to_owned(),
            }
        }

        pub fn render(&self) -> String {
            let query = if self.query.is_empty() {
                String::new()
            } else {
                format!("?{}", self.query)
            };
            format!("postgres://{}@{}/{}{query}", self.user, self.host, self.db)
        }
    }
}

async fn execute_ignoring_duplicates(client: &tokio_postgres::Client, sql: &str) {
    if let Err(error) = client.batch_execute(sql).await {
        let duplicate = error.code().is_some_and(|code| {
            *code == tokio_postgres::error::SqlState::DUPLICATE_OBJECT
                || *code == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
        });
        assert!(duplicate, "{sql}: {error}");
    }
}

/// Creates a new, migrated database on the test server and returns its URLs.
pub async fn create_database() -> TestDatabase {
    create_database_on(&admin_url()).await
}

/// Creates a new, migrated database on the server `admin` (a superuser URL) names.
pub async fn create_database_on(admin: &str) -> TestDatabase {
    let database = create_unmigrated_database_on(admin).await;
    let (mut owner, connection) = tokio_postgres::connect(&database.owner_url, NoTls)
        .await
        .expect("connect as owner");
    tokio::spawn(connection);
    schema::migrate(&mut owner, APP_ROLE).await.expect("migrate");
    database
}

/// Creates a new, empty database owned by [`OWNER_ROLE`] on the test server
/// (for restoring an older release's schema and data, then migrating).
pub async fn create_unmigrated_database() -> TestDatabase {
    create_unmigrated_database_on(&admin_url()).await
}

async fn create_unmigrated_database_on(admin: &str) -> TestDatabase {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let admin = admin.to_owned();
    let (client, connection) = tokio_postgres::connect(&admin, NoTls)
        .await
        .expect("the test PostgreSQL server answers");
    tokio::spawn(connection);
    // Roles are shared by all test databases; concurrent tests may race to create them.
    execute_ignoring_duplicates(&client, &format!("CREATE ROLE {OWNER_ROLE} LOGIN")).await;
    execute_ignoring_duplicates(
        &client,
        &format!("CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS"),
    )
    .await;
    let name = format!(
        "steadfast_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        uuid::Uuid::now_v7().simple()
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name} OWNER {OWNER_ROLE}"))
        .await
        .expect("create database");
    TestDatabase {
        owner_url: with_user_and_db(&admin, OWNER_ROLE, &name),
        app_url: with_user_and_db(&admin, APP_ROLE, &name),
        admin_url: with_user_and_db(&admin, &url_parts::Parts::parse(&admin).user, &name),
        name,
    }
}

/// A store on a fresh database, connected as the application role.
pub async fn fresh_store() -> (PostgresStore, TestDatabase) {
    let database = create_database().await;
    let store = PostgresStore::connect(&database.app_url)
        .await
        .expect("connect as the application role");
    (store, database)
}
