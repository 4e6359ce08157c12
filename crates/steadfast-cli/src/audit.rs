//! `steadfast audit`: verify chains and export records, straight from the
//! storage (holding the data dir or the database credentials is the credential).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use steadfast_core::TenantName;
use steadfast_core::audit::Head;
use steadfast_protocol::AuditCheckpoint;
use steadfast_server::engine::audit::{AuditSigner, verify_checkpoint};
use steadfast_server::{Clock, SystemClock};
use steadfast_store::audit::{VerifyError, verify};
use steadfast_store::decide::KeyChange;
use steadfast_store::{AuditQuery, Store, Tenant, TenantScope, auth};

use crate::admin::store;
use crate::cli::AuditCommand;

pub const SIGNING_KEY_FILE: &str = "audit-signing.key";

/// Reads the signing key, if the file exists.
pub fn read_signer(path: &Path) -> anyhow::Result<Option<AuditSigner>> {
    match std::fs::read_to_string(path) {
        Ok(text) => AuditSigner::from_hex(&text)
            .map(Some)
            .ok_or_else(|| anyhow!("{} is not an audit signing key (64 hex digits)", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The signing key in `path`, created there if the file does not exist.
/// Creation is atomic: the key is written to a private temporary file and
/// linked into place, which fails if `path` appeared meanwhile; processes
/// racing to create it all end up with the one key that won. The bool says
/// whether this call created it.
pub fn read_or_create_signer(path: &Path) -> anyhow::Result<(AuditSigner, bool)> {
    if let Some(signer) = read_signer(path)? {
        return Ok((signer, false));
    }
    let dir = match path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        Some(dir) => dir.to_owned(),
        None => PathBuf::from("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let seed: [u8; 32] = rand::random();
    let unique: u64 = rand::random();
    let tmp = dir.join(format!(".audit-signing-{}-{unique:016x}.tmp", std::process::id()));
    let written = (|| {
        let mut file = OpenOptions::new().create_new(true).write(true).mode(0o600).open(&tmp)?;
        file.write_all(format!("{}\n", hex::encode(seed)).as_bytes())?;
        file.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            File::open(&dir)
                .and_then(|dir| dir.sync_all())
                .with_context(|| format!("cannot sync {}", dir.display()))?;
            Ok((AuditSigner::from_seed(seed), true))
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            let signer =
                read_signer(path)?.ok_or_else(|| anyhow!("{} vanished while being created", path.display()))?;
            Ok((signer, false))
        }
        Err(error) => Err(error).with_context(|| format!("cannot write the audit signing key to {}", path.display())),
    }
}

/// The public keys that may have signed this deployment's checkpoints.
async fn registered_keys(store: &dyn Store) -> anyhow::Result<Vec<String>> {
    let keys = store.signing_keys().await?;
    if keys.is_empty() {
        bail!("no audit signing key is registered yet: `steadfast serve` registers its key when it starts");
    }
    Ok(keys.into_iter().map(|key| key.public_key).collect())
}

async fn tenants(store: &dyn Store, only: Option<&str>) -> anyhow::Result<Vec<Tenant>> {
    let all = store.list_tenants().await?;
    match only {
        None => Ok(all),
        Some(name) => {
            let name = TenantName::new(name)?;
            let tenant = all
                .into_iter()
                .find(|t| t.name == name)
                .ok_or_else(|| anyhow!("no tenant named {name:?}"))?;
            Ok(vec![tenant])
        }
    }
}

pub async fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify {
            tenant,
            checkpoint,
            public_keys,
            data,
        } => {
            let store = store(&data).await?;
            let checkpoint = match &checkpoint {
                Some(path) => {
                    let text =
                        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                    let document: AuditCheckpoint =
                        serde_json::from_str(&text).context("the checkpoint is not a GET /v1/audit/head document")?;
                    let (trusted, whose) = match public_keys.is_empty() {
                        true => (registered_keys(store.as_ref()).await?, "registered"),
                        false => (public_keys.iter().map(|key| key.to_lowercase()).collect(), "given"),
                    };
                    let head = verify_checkpoint(&document, &trusted)?;
                    println!("checkpoint signed by {whose} key {}", document.public_key);
                    Some((document.tenant_id, head))
                }
                None => None,
            };
            // Every tenant's chain, and (unless one tenant was asked for) the
            // system chain: signing keys, unknown keys' failures.
            let mut chains: Vec<(String, TenantScope)> = tenants(store.as_ref(), tenant.as_deref())
                .await?
                .iter()
                .map(|tenant| (format!("tenant {}", tenant.name), auth::local_operator(tenant)))
                .collect();
            if tenant.is_none() {
                chains.push(("system chain".to_owned(), auth::system_chain_operator()));
            }
            let mut broken = 0;
            for (name, scope) in chains {
                let kept: Vec<Head> = checkpoint
                    .iter()
                    .filter(|(id, _)| *id == scope.tenant_id().0)
                    .map(|(_, head)| *head)
                    .collect();
                match verify(store.as_ref(), &scope, &kept).await {
                    Ok(verified) => println!(
                        "{name}: intact, {} records{}{}",
                        verified.records,
                        verified.head.map(|h| format!(", head {}", h.seq)).unwrap_or_default(),
                        if kept.is_empty() { "" } else { ", checkpoint confirmed" }
                    ),
                    Err(VerifyError::Breach(breach)) => {
                        broken += 1;
                        println!("{name}: TAMPERED: {breach}");
                    }
                    Err(VerifyError::Store(error)) => return Err(error.into()),
                }
            }
            if broken > 0 {
                return Err(anyhow!("{broken} audit chain(s) failed verification"));
            }
            Ok(())
        }
        AuditCommand::CreateKey { file } => {
            let (signer, created) = read_or_create_signer(&file)?;
            if !created {
                bail!("{} already exists; refusing to replace a signing key", file.display());
            }
            println!("{}", signer.public_key_hex());
            Ok(())
        }
        AuditCommand::RotateKey { new_key_file, data } => {
            let store = store(&data).await?;
            let (signer, _) = read_or_create_signer(&new_key_file)?;
            let registered = store
                .register_signing_key(&signer.public_key_hex(), KeyChange::Rotate, SystemClock.now())
                .await?
                .expect("a rotation registers a key or is refused");
            println!("{}", registered.public_key);
            eprintln!(
                "audit signing key {} is now current (position {}); restart every node with --audit-signing-key-file {}",
                registered.public_key,
                registered.position,
                new_key_file.display()
            );
            Ok(())
        }
        AuditCommand::Keys { data } => {
            let store = store(&data).await?;
            let keys = store.signing_keys().await?;
            for (index, key) in keys.iter().enumerate() {
                let state = match keys.get(index + 1) {
                    Some(next) => format!("retired {}", next.registered_at),
                    None => "current".to_owned(),
                };
                println!(
                    "{}\t{}\tregistered {}\t{state}",
                    key.position, key.public_key, key.registered_at
                );
            }
            Ok(())
        }
        AuditCommand::Export {
            tenant,
            since,
            until,
            data,
        } => {
            let store = store(&data).await?;
            let tenant = tenants(store.as_ref(), Some(&tenant)).await?.remove(0);
            let scope = auth::local_operator(&tenant);
            let parse = |field: &str, value: Option<String>| {
                value
                    .map(|v| v.parse().with_context(|| format!("--{field} must be an RFC 3339 time")))
                    .transpose()
            };
            let mut query = AuditQuery {
                since: parse("since", since)?,
                until: parse("until", until)?,
                limit: 1000,
                ..AuditQuery::default()
            };
            loop {
                let page = store.audit_records(&scope, query.clone()).await?;
                for record in &page.records {
                    let line = steadfast_server::api::audit_record(record).map_err(|e| anyhow!(e.message))?;
                    println!("{}", serde_json::to_string(&line)?);
                }
                match page.next {
                    Some(next) => query.after = Some(next),
                    None => return Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Servers starting at once on one key file (PostgreSQL nodes sharing a
    /// directory, or a shared `--audit-signing-key-file`) end up with one key.
    #[test]
    fn racing_creators_of_a_key_file_all_get_the_one_key() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("keys").join(SIGNING_KEY_FILE);
            let start = std::sync::Barrier::new(8);
            let results: Vec<(String, bool)> = std::thread::scope(|scope| {
                let racers: Vec<_> = (0..8)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            let (signer, created) = read_or_create_signer(&path).unwrap();
                            (signer.public_key_hex(), created)
                        })
                    })
                    .collect();
                racers.into_iter().map(|racer| racer.join().unwrap()).collect()
            });
            let on_disk = read_signer(&path).unwrap().unwrap().public_key_hex();
            assert!(results.iter().all(|(key, _)| *key == on_disk), "{results:?}");
            assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
            let leftovers = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
            assert_eq!(leftovers, 1, "temporary files were left behind");
        }
    }
}
