//! `steadfast audit`: verify chains and export records, straight from the
//! storage (holding the data dir or the database credentials is the credential).

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use steadfast_core::TenantName;
use steadfast_core::audit::Head;
use steadfast_protocol::AuditCheckpoint;
use steadfast_server::engine::audit::{AuditSigner, verify_checkpoint};
use steadfast_store::audit::{VerifyError, verify};
use steadfast_store::{AuditQuery, Store, Tenant, auth};

use crate::admin::store;
use crate::cli::{AuditCommand, StorageArgs};

pub const SIGNING_KEY_FILE: &str = "audit-signing.key";

fn signing_key_path(explicit: Option<&Path>, storage: &StorageArgs) -> PathBuf {
    explicit.map_or_else(|| storage.data_dir.join(SIGNING_KEY_FILE), Path::to_path_buf)
}

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
            audit_signing_key_file,
            data,
        } => {
            let store = store(&data).await?;
            let checkpoint = match &checkpoint {
                Some(path) => {
                    let text =
                        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                    let document: AuditCheckpoint =
                        serde_json::from_str(&text).context("the checkpoint is not a GET /v1/audit/head document")?;
                    let signer = read_signer(&signing_key_path(audit_signing_key_file.as_deref(), &data))?;
                    if signer.is_none() {
                        eprintln!("note: no signing key found; trusting the public key inside the checkpoint");
                    }
                    let head = verify_checkpoint(&document, signer.as_ref())?;
                    Some((document.tenant_id, head))
                }
                None => None,
            };
            let mut broken = 0;
            for tenant in tenants(store.as_ref(), tenant.as_deref()).await? {
                let kept: Vec<Head> = checkpoint
                    .iter()
                    .filter(|(id, _)| *id == tenant.id.0)
                    .map(|(_, head)| *head)
                    .collect();
                match verify(store.as_ref(), &auth::local_operator(&tenant), &kept).await {
                    Ok(verified) => println!(
                        "tenant {}: intact, {} records{}{}",
                        tenant.name,
                        verified.records,
                        verified.head.map(|h| format!(", head {}", h.seq)).unwrap_or_default(),
                        if kept.is_empty() { "" } else { ", checkpoint confirmed" }
                    ),
                    Err(VerifyError::Breach(breach)) => {
                        broken += 1;
                        println!("tenant {}: TAMPERED: {breach}", tenant.name);
                    }
                    Err(VerifyError::Store(error)) => return Err(error.into()),
                }
            }
            if broken > 0 {
                return Err(anyhow!("{broken} audit chain(s) failed verification"));
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
