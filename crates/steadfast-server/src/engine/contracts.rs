//! Payload contracts: each queue's schema versions, compiled once per node,
//! and the checks of payloads (at enqueue) and outputs (at completion)
//! against them.
//!
//! Which version is a queue's newest is read at most once per
//! [`HEADS_TTL`] per tenant: a registration on this node applies at once,
//! one on another node (PostgreSQL) within that long. A version never
//! changes once registered, so its compiled validator is kept until the
//! cache is full.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonschema::{PatternOptions, Validator};
use serde_json::Value;
use steadfast_core::lifecycle::JobSpec;
use steadfast_core::{QueueName, TenantId};
use steadfast_store::schemas::{MAX_VIOLATIONS, PayloadSchema, Registered, SchemaHead, SchemaRegistration, Violation};
use steadfast_store::{StoreError, TenantScope};

use super::Engine;

/// How long this node trusts what it read of a tenant's newest versions.
pub const HEADS_TTL: Duration = Duration::from_secs(1);
/// The largest schema document accepted, in bytes of JSON.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// Compiled versions kept per node; past it the cache starts over.
const COMPILED_BOUND: usize = 10_000;
/// Tenants whose newest versions a node remembers; past it that cache
/// starts over.
const TENANTS_BOUND: usize = 10_000;
/// The longest violation message kept, in bytes: messages quote the
/// offending value, which may be large.
const MAX_MESSAGE_BYTES: usize = 300;

/// A version's schemas, compiled.
#[derive(Debug)]
pub struct Compiled {
    payload: Validator,
    output: Option<Validator>,
}

#[derive(Debug, Default)]
struct Heads {
    /// By tenant: when read (the clock's `elapsed`) and each queue's head.
    tenants: HashMap<TenantId, (Duration, Arc<HashMap<QueueName, SchemaHead>>)>,
    /// Bumped by every local registration, so a read that raced one is not kept.
    generation: u64,
}

#[derive(Debug, Default)]
pub(super) struct SchemaCache {
    heads: Mutex<Heads>,
    compiled: Mutex<HashMap<(TenantId, QueueName, u32), Arc<Compiled>>>,
}

/// Compiles a schema as draft 2020-12: the meta-schema must accept it, a
/// `$ref` may only point inside it (nothing is fetched), `format` is
/// asserted, and `pattern` uses a regex engine without backtracking (no
/// pattern can make validation slow).
pub fn compile(schema: &Value) -> Result<Validator, String> {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .with_pattern_options(PatternOptions::regex())
        .build(schema)
        .map_err(|error| bounded(error.to_string()))
}

/// What `instance` breaks of `validator`: each violation's JSON Pointer
/// into the instance, the keyword and a message; at most [`MAX_VIOLATIONS`].
pub fn violations(validator: &Validator, instance: &Value) -> Vec<Violation> {
    validator
        .iter_errors(instance)
        .take(MAX_VIOLATIONS)
        .map(|error| Violation {
            pointer: error.instance_path().to_string(),
            rule: error.kind().keyword().to_owned(),
            message: bounded(error.to_string()),
        })
        .collect()
}

fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

/// Parses stored or received JSON text; the API only passes valid JSON.
fn parse(text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|_| StoreError::Corrupt("a payload or schema is not JSON".into()))
}

impl Engine {
    /// Registers `version` of `queue`'s schema (see
    /// [`steadfast_store::decide::register_schema`]); this node validates
    /// against it from the next enqueue on.
    pub async fn register_schema(
        &self,
        scope: &TenantScope,
        queue: &QueueName,
        registration: SchemaRegistration,
    ) -> Result<Registered, StoreError> {
        let registered = self
            .inner
            .store
            .register_schema(scope, queue, registration, self.now())
            .await?;
        let mut heads = self
            .inner
            .schemas
            .heads
            .lock()
            .expect("the schema cache is never poisoned");
        heads.generation += 1;
        heads.tenants.remove(&scope.tenant_id());
        Ok(registered)
    }

    /// Checks each payload against its queue's schema: the version the
    /// spec names, else the newest. Records the version checked in the
    /// spec. A queue without a schema accepts any payload.
    pub async fn check_payloads(&self, scope: &TenantScope, specs: &mut [JobSpec]) -> Result<(), StoreError> {
        let heads = self.schema_heads(scope).await?;
        if heads.is_empty() {
            if let Some(index) = specs.iter().position(|spec| spec.schema_version.is_some()) {
                return Err(unknown_version(&specs[index], index));
            }
            return Ok(());
        }
        for (index, spec) in specs.iter_mut().enumerate() {
            let version = match (spec.schema_version, heads.get(&spec.queue)) {
                (Some(version), Some(head)) if version <= head.latest => version,
                (None, Some(head)) => head.latest,
                (None, None) => continue,
                (Some(_), _) => return Err(unknown_version(spec, index)),
            };
            let compiled = self
                .compiled(scope, &spec.queue, version)
                .await?
                .ok_or_else(|| unknown_version(spec, index))?;
            let found = violations(&compiled.payload, &parse(&spec.payload)?);
            if !found.is_empty() {
                return Err(StoreError::PayloadInvalid {
                    index,
                    violations: found,
                });
            }
            spec.schema_version = Some(version);
        }
        Ok(())
    }

    /// Checks the output of a job whose payload was validated against
    /// `version` of `queue`'s schema, when that version has an output schema.
    pub async fn check_output(
        &self,
        scope: &TenantScope,
        queue: &QueueName,
        version: u32,
        output: &str,
    ) -> Result<(), Vec<Violation>> {
        let compiled = match self.compiled(scope, queue, version).await {
            Ok(Some(compiled)) => compiled,
            // The completion itself will meet a failing store again.
            Ok(None) | Err(_) => return Ok(()),
        };
        let Some(validator) = &compiled.output else {
            return Ok(());
        };
        let Ok(output) = serde_json::from_str::<Value>(output) else {
            return Ok(());
        };
        let found = violations(validator, &output);
        if found.is_empty() { Ok(()) } else { Err(found) }
    }

    /// Whether any of the tenant's queues checks outputs: completions of
    /// other tenants skip reading their job.
    pub async fn checks_outputs(&self, scope: &TenantScope) -> Result<bool, StoreError> {
        Ok(self.schema_heads(scope).await?.values().any(|head| head.checks_outputs))
    }

    /// Every version of the tenant's schemas (of one queue if given).
    pub async fn schemas(
        &self,
        scope: &TenantScope,
        queue: Option<&QueueName>,
    ) -> Result<Vec<PayloadSchema>, StoreError> {
        self.inner.store.schemas(scope, queue).await
    }

    pub async fn schema(
        &self,
        scope: &TenantScope,
        queue: &QueueName,
        version: u32,
    ) -> Result<Option<PayloadSchema>, StoreError> {
        self.inner.store.schema(scope, queue, version).await
    }

    async fn schema_heads(&self, scope: &TenantScope) -> Result<Arc<HashMap<QueueName, SchemaHead>>, StoreError> {
        let tenant = scope.tenant_id();
        let now = self.inner.clock.elapsed();
        let generation = {
            let heads = self
                .inner
                .schemas
                .heads
                .lock()
                .expect("the schema cache is never poisoned");
            if let Some((read_at, known)) = heads.tenants.get(&tenant)
                && now.saturating_sub(*read_at) < HEADS_TTL
            {
                return Ok(known.clone());
            }
            heads.generation
        };
        let read: HashMap<QueueName, SchemaHead> = self
            .inner
            .store
            .schema_heads(scope)
            .await?
            .into_iter()
            .map(|head| (head.queue.clone(), head))
            .collect();
        let read = Arc::new(read);
        let mut heads = self
            .inner
            .schemas
            .heads
            .lock()
            .expect("the schema cache is never poisoned");
        if heads.generation == generation {
            if heads.tenants.len() >= TENANTS_BOUND && !heads.tenants.contains_key(&tenant) {
                heads.tenants.clear();
            }
            heads.tenants.insert(tenant, (now, read.clone()));
        }
        Ok(read)
    }

    /// A version's compiled schemas, compiled on first use; `None` if the
    /// version does not exist.
    async fn compiled(
        &self,
        scope: &TenantScope,
        queue: &QueueName,
        version: u32,
    ) -> Result<Option<Arc<Compiled>>, StoreError> {
        let key = (scope.tenant_id(), queue.clone(), version);
        if let Some(compiled) = self.inner.schemas.compiled.lock().expect("never poisoned").get(&key) {
            return Ok(Some(compiled.clone()));
        }
        let Some(stored) = self.inner.store.schema(scope, queue, version).await? else {
            return Ok(None);
        };
        let build = |text: &str| compile(&parse(text)?).map_err(StoreError::Corrupt);
        let compiled = Arc::new(Compiled {
            payload: build(&stored.schema)?,
            output: stored.output_schema.as_deref().map(build).transpose()?,
        });
        let mut cache = self.inner.schemas.compiled.lock().expect("never poisoned");
        if cache.len() >= COMPILED_BOUND {
            cache.clear();
        }
        cache.insert(key, compiled.clone());
        Ok(Some(compiled))
    }
}

/// A payload cannot pass a version that does not exist.
fn unknown_version(spec: &JobSpec, index: usize) -> StoreError {
    let version = spec.schema_version.map_or_else(String::new, |v| v.to_string());
    StoreError::PayloadInvalid {
        index,
        violations: vec![Violation {
            pointer: String::new(),
            rule: "schema_version".into(),
            message: format!("queue {} has no schema version {version}", spec.queue),
        }],
    }
}
