//! Local administration: tenants and keys, straight on the storage. Holding
//! the data dir (or the database credentials) is the credential, so these
//! need no API key, and they work while servers run.

use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use steadfast_core::{ApiKeySecret, KeyId, Role, TenantId, TenantName, Timestamp};
use steadfast_postgres::PostgresStore;
use steadfast_server::{Clock, SystemClock};
use steadfast_store::{NewApiKey, Store, StoreError, Tenant, TenantLimits, auth};

use crate::cli::{KeyCommand, MigrateArgs, RoleArg, StorageArgs, TenantCommand};
use crate::serve::{ensure_dir_exists, open_store};

/// The store the flags name: PostgreSQL with `--database-url`, else the data dir.
pub async fn store(storage: &StorageArgs) -> anyhow::Result<Arc<dyn Store>> {
    match &storage.database_url {
        Some(url) => {
            let options = storage.pool_options().map_err(anyhow::Error::msg)?;
            Ok(Arc::new(PostgresStore::connect_with(url, options).await?))
        }
        None => {
            ensure_dir_exists(&storage.data_dir)?;
            Ok(Arc::new(open_store(&storage.data_dir)?))
        }
    }
}

async fn tenant(store: &dyn Store, name: &str) -> anyhow::Result<Tenant> {
    let name = TenantName::new(name)?;
    store
        .tenant_by_name(&name)
        .await?
        .ok_or_else(|| anyhow!("no tenant named {name:?}"))
}

pub async fn tenant_command(command: TenantCommand) -> anyhow::Result<()> {
    match command {
        TenantCommand::Create { name, data } => {
            let name = TenantName::new(name)?;
            let store = store(&data).await?;
            match store
                .create_tenant(TenantId(uuid::Uuid::now_v7()), &name, SystemClock.now())
                .await
            {
                Ok(tenant) => println!("{}", tenant.name),
                Err(StoreError::AlreadyExists) => {
                    return Err(anyhow!("a tenant named {name:?} already exists"));
                }
                Err(error) => return Err(error.into()),
            }
        }
        TenantCommand::List { data } => {
            for tenant in store(&data).await?.list_tenants().await? {
                println!("{}\t{}\t{}", tenant.name, tenant.id, tenant.created_at);
            }
        }
        TenantCommand::SetLimits {
            name,
            key_rate_limit,
            key_rate_burst,
            max_unfinished_jobs,
            data,
        } => {
            let rate_range = 1..=1_000_000;
            if key_rate_limit.is_some_and(|rate| !rate_range.contains(&rate))
                || key_rate_burst.is_some_and(|burst| !rate_range.contains(&burst))
            {
                bail!("--key-rate-limit and --key-rate-burst must be between 1 and 1000000");
            }
            if max_unfinished_jobs.is_some_and(|max| !(1..=i64::MAX as u64).contains(&max)) {
                bail!("--max-unfinished-jobs must be positive and at most {}", i64::MAX);
            }
            let store = store(&data).await?;
            let tenant = tenant(store.as_ref(), &name).await?;
            let limits = TenantLimits {
                key_rate: key_rate_limit.zip(key_rate_burst),
                max_unfinished_jobs,
            };
            store.set_tenant_limits(tenant.id, limits, SystemClock.now()).await?;
            eprintln!("tenant {} limits set; every node applies them within 5 s", tenant.name);
        }
    }
    Ok(())
}

fn parse_key_id(id: &str) -> anyhow::Result<KeyId> {
    KeyId::parse(id).map_err(|_| anyhow!("{id:?} is not a key id (16 hex digits, the part after sfk_)"))
}

/// `now + after`, for expiries and grace periods.
fn later(now: Timestamp, after: std::time::Duration) -> anyhow::Result<Timestamp> {
    now.checked_add(after)
        .map_err(|_| anyhow!("{after:?} from now is out of range"))
}

/// A fresh random key: the secret to show once, and what storage keeps.
pub fn generate_key(role: Role, name: &str) -> (ApiKeySecret, NewApiKey) {
    let secret = ApiKeySecret::from_random(rand::random(), rand::random());
    let key = NewApiKey {
        key_id: secret.key_id().clone(),
        name: name.to_owned(),
        role,
        secret_hash: secret.secret_hash(),
        expires_at: None,
    };
    (secret, key)
}

fn role(arg: RoleArg) -> Role {
    match arg {
        RoleArg::Admin => Role::Admin,
        RoleArg::Producer => Role::Producer,
        RoleArg::Worker => Role::Worker,
        RoleArg::Reader => Role::Reader,
    }
}

pub async fn key_command(command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create {
            tenant: name,
            role: role_arg,
            name: label,
            expires_in,
            data,
        } => {
            let store = store(&data).await?;
            let tenant = tenant(store.as_ref(), &name).await?;
            let now = SystemClock.now();
            let (secret, mut key) = generate_key(role(role_arg), &label);
            key.expires_at = expires_in.map(|after| later(now, after)).transpose()?;
            let info = store.create_key(&auth::local_operator(&tenant), key, now).await?;
            let expiry = info.expires_at.map(|at| format!(", expires {at}")).unwrap_or_default();
            eprintln!(
                "created key {} ({} of tenant {}{expiry}); it is shown only now",
                secret.key_id(),
                role(role_arg),
                tenant.name
            );
            println!("{}", secret.reveal());
        }
        KeyCommand::Rotate {
            id,
            grace,
            expires_in,
            data,
        } => {
            let key_id = parse_key_id(&id)?;
            let store = store(&data).await?;
            let now = SystemClock.now();
            // The store gives the new key the old key's tenant, role and name.
            let (secret, mut key) = generate_key(Role::Reader, "");
            key.expires_at = expires_in.map(|after| later(now, after)).transpose()?;
            match store.rotate_key(&key_id, key, later(now, grace)?, now).await {
                Ok((new, old)) => {
                    eprintln!(
                        "key {} replaces {} ({}); {} is revoked {}",
                        new.key_id,
                        old.key_id,
                        new.role,
                        old.key_id,
                        old.revoked_at
                            .map_or_else(|| "never".to_owned(), |at| format!("at {at}"))
                    );
                    println!("{}", secret.reveal());
                }
                Err(StoreError::NotFound) => return Err(anyhow!("no key with id {key_id}")),
                Err(StoreError::KeyNotActive) => {
                    return Err(anyhow!(
                        "key {key_id} is already revoked or expired; create a new key instead"
                    ));
                }
                Err(error) => return Err(error).context("rotating the key"),
            }
        }
        KeyCommand::Revoke { id, data } => {
            let key_id = parse_key_id(&id)?;
            let store = store(&data).await?;
            match store.revoke_key(&key_id, SystemClock.now()).await {
                Ok(info) => eprintln!(
                    "revoked key {} (since {})",
                    info.key_id,
                    info.revoked_at.expect("just revoked")
                ),
                Err(StoreError::NotFound) => return Err(anyhow!("no key with id {key_id}")),
                Err(error) => return Err(error).context("revoking the key"),
            }
        }
        KeyCommand::List { tenant: name, data } => {
            let store = store(&data).await?;
            let tenant = tenant(store.as_ref(), &name).await?;
            let now = SystemClock.now();
            println!("ID\tROLE\tCREATED\tEXPIRES\tLAST USED\tSTATE\tNAME");
            for key in store.list_keys(&auth::local_operator(&tenant)).await? {
                let or_never = |at: Option<Timestamp>| at.map_or_else(|| "never".to_owned(), |at| at.to_string());
                let state = match (key.revoked_at, key.expires_at) {
                    (Some(at), _) if at <= now => format!("revoked {at}"),
                    (_, Some(at)) if at <= now => format!("expired {at}"),
                    (Some(at), _) => format!("active, revoked at {at}"),
                    (None, _) => "active".to_owned(),
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{state}\t{}",
                    key.key_id,
                    key.role,
                    key.created_at,
                    or_never(key.expires_at),
                    or_never(key.last_used_at),
                    key.name
                );
            }
        }
    }
    Ok(())
}

pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let mut client = steadfast_postgres::connect_once(&args.database_url)
        .await
        .context("cannot connect to PostgreSQL as the owning role")?;
    let migrated = steadfast_postgres::schema::migrate(&mut client, &args.app_role).await?;
    if migrated.from == migrated.to {
        eprintln!(
            "schema already at version {}; grants to {} refreshed",
            migrated.to, args.app_role
        );
    } else {
        eprintln!(
            "schema migrated from version {} to {}; {} granted what the server needs",
            migrated.from, migrated.to, args.app_role
        );
    }
    for role in &args.enqueue_role {
        steadfast_postgres::schema::grant_enqueue(&mut client, role, &args.app_role).await?;
        eprintln!("{role} may call steadfast.enqueue(...) inside its own transactions, and nothing else");
    }
    Ok(())
}
