//! Local administration: tenants and keys, straight on the data dir. Holding
//! the data dir is the credential, so these need no API key, and they work
//! while a server runs (SQLite serialises the writes).

use anyhow::{Context, anyhow};
use steadfast_core::{ApiKeySecret, KeyId, Role, TenantId, TenantName};
use steadfast_server::{Clock, SystemClock};
use steadfast_sqlite::SqliteStore;
use steadfast_store::{KeyStore, NewApiKey, StoreError, Tenant, TenantStore, auth};

use crate::cli::{DataDirArg, KeyCommand, RoleArg, TenantCommand};
use crate::serve::{ensure_dir_exists, open_store};

fn store(data: &DataDirArg) -> anyhow::Result<SqliteStore> {
    ensure_dir_exists(&data.data_dir)?;
    open_store(&data.data_dir)
}

async fn tenant(store: &SqliteStore, name: &str) -> anyhow::Result<Tenant> {
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
            let store = store(&data)?;
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
            for tenant in store(&data)?.list_tenants().await? {
                println!("{}\t{}\t{}", tenant.name, tenant.id, tenant.created_at);
            }
        }
    }
    Ok(())
}

/// A fresh random key: the secret to show once, and what storage keeps.
pub fn generate_key(role: Role, name: &str) -> (ApiKeySecret, NewApiKey) {
    let secret = ApiKeySecret::from_random(rand::random(), rand::random());
    let key = NewApiKey {
        key_id: secret.key_id().clone(),
        name: name.to_owned(),
        role,
        secret_hash: secret.secret_hash(),
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
            data,
        } => {
            let store = store(&data)?;
            let tenant = tenant(&store, &name).await?;
            let (secret, key) = generate_key(role(role_arg), &label);
            store
                .create_key(&auth::local_operator(&tenant), key, SystemClock.now())
                .await?;
            eprintln!(
                "created key {} ({} of tenant {}); it is shown only now",
                secret.key_id(),
                role(role_arg),
                tenant.name
            );
            println!("{}", secret.reveal());
        }
        KeyCommand::Revoke { id, data } => {
            let key_id = KeyId::parse(&id)
                .map_err(|_| anyhow!("{id:?} is not a key id (16 hex digits, the part after sfk_)"))?;
            let store = store(&data)?;
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
            let store = store(&data)?;
            let tenant = tenant(&store, &name).await?;
            for key in store.list_keys(&auth::local_operator(&tenant)).await? {
                let revoked = key
                    .revoked_at
                    .map(|at| format!("revoked {at}"))
                    .unwrap_or_else(|| "active".into());
                println!("{}\t{}\t{}\t{}", key.key_id, key.role, revoked, key.name);
            }
        }
    }
    Ok(())
}
