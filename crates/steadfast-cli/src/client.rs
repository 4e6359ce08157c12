//! Client commands: the SDK, printing JSON for humans and scripts alike.

use anyhow::Context;
use serde::Serialize;
use steadfast_sdk::{Client, ListJobs, wire};

use crate::cli::{
    ClientArgs, EnqueueArgs, JobCommand, QueueCommand, ResourceCommand, ScheduleCommand, SloCommand, SourceCommand,
};

fn client(args: &ClientArgs) -> anyhow::Result<Client> {
    Ok(Client::new(&args.url, &args.key)?)
}

fn print(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub async fn enqueue(args: EnqueueArgs) -> anyhow::Result<()> {
    let payload = serde_json::value::RawValue::from_string(args.payload)
        .context("--payload must be valid JSON, e.g. '{\"to\":\"a@example.com\"}'")?;
    let run_at = args
        .run_at
        .map(|at| at.parse())
        .transpose()
        .context("--run-at must be an RFC 3339 time such as 2030-01-01T09:00:00Z")?;
    let request = wire::EnqueueRequest {
        queue: args.queue,
        payload,
        idempotency_key: args.idempotency_key,
        max_attempts: args.max_attempts,
        timeout_secs: args.timeout_secs,
        run_at,
        priority: args.priority,
        flow_key: args.flow_key,
        resource: args.resource,
        singleton: args
            .singleton_key
            .map(|key| -> anyhow::Result<wire::SingletonRequest> {
                let mode = args
                    .singleton_mode
                    .map(|mode| serde_json::from_value(serde_json::Value::String(mode)))
                    .transpose()
                    .context("--singleton-mode must be skip or replace")?;
                Ok(wire::SingletonRequest { key, mode })
            })
            .transpose()?,
        debounce_ms: args.debounce_ms,
        debounce_max_ms: args.debounce_max_ms,
        schema_version: args.schema_version,
        producer: None,
    };
    let enqueued = client(&args.client)?.enqueue(&request).await?;
    if enqueued.replayed {
        eprintln!("idempotency key matched an earlier request: this is the original job");
    }
    print(&enqueued.job)
}

pub async fn job_command(command: JobCommand) -> anyhow::Result<()> {
    match command {
        JobCommand::Get { id, client: args } => print(&client(&args)?.get_job(&id).await?),
        JobCommand::List {
            queue,
            state,
            limit,
            cursor,
            client: args,
        } => {
            let state = state
                .map(|s| serde_json::from_value(serde_json::Value::String(s)))
                .transpose()
                .context("--state must be one of scheduled, queued, running, succeeded, dead, cancelled")?;
            let page = client(&args)?
                .list_jobs(&ListJobs {
                    queue,
                    state,
                    limit: Some(limit),
                    cursor,
                })
                .await?;
            for job in &page.jobs {
                println!("{}", serde_json::to_string(job)?);
            }
            if let Some(cursor) = page.next_cursor {
                eprintln!("more: --cursor {cursor}");
            }
            Ok(())
        }
        JobCommand::Retry {
            id,
            reason,
            client: args,
        } => print(&client(&args)?.retry(&id, reason.as_deref()).await?),
        JobCommand::Cancel {
            id,
            reason,
            client: args,
        } => print(&client(&args)?.cancel(&id, reason.as_deref()).await?),
    }
}

pub async fn slo_command(command: SloCommand) -> anyhow::Result<()> {
    match command {
        SloCommand::Create {
            name,
            queue,
            objective,
            latency_ms,
            window_days,
            notify_url,
            client: args,
        } => {
            let request = wire::SloRequest {
                name,
                queue,
                objective,
                latency_threshold_ms: latency_ms,
                window_days,
                notify_url,
            };
            print(&client(&args)?.create_slo(&request).await?)
        }
        SloCommand::List { client: args } => print(&client(&args)?.list_slos().await?),
    }
}

pub async fn source_command(command: SourceCommand) -> anyhow::Result<()> {
    match command {
        SourceCommand::Create {
            name,
            kind,
            queue,
            secret,
            tolerance_secs,
            dedup_window_secs,
            config,
            client: args,
        } => {
            let config = config
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .context("--config must be a JSON object, e.g. '{\"keep_headers\":[\"x-request-id\"]}'")?;
            let kind = serde_json::from_value(serde_json::Value::String(kind))
                .context("--kind must be one of stripe, github, standard, shopify, slack, hmac")?;
            let request = wire::SourceRequest {
                name,
                kind,
                queue,
                secret,
                tolerance_secs,
                dedup_window_secs,
                config,
            };
            let source = client(&args)?.create_source(&request).await?;
            if source.secret.is_some() {
                eprintln!("the secret is shown only now: give it to the provider");
            }
            print(&source)
        }
        SourceCommand::List { client: args } => print(&client(&args)?.list_sources().await?),
        SourceCommand::Rotate {
            id,
            secret,
            grace,
            client: args,
        } => {
            let request = wire::SecretRequest {
                secret,
                expires_at: None,
                retire_others_after_secs: grace.map(|grace| grace.as_secs()),
            };
            let added = client(&args)?.add_source_secret(&id, &request).await?;
            if added.secret.is_some() {
                eprintln!("the new secret is shown only now: switch the provider to it before the grace period ends");
            }
            print(&added)
        }
        SourceCommand::Events {
            id,
            limit,
            cursor,
            client: args,
        } => {
            let page = client(&args)?
                .list_source_events(&id, Some(limit), cursor.as_deref())
                .await?;
            for event in &page.events {
                println!("{}", serde_json::to_string(event)?);
            }
            if let Some(cursor) = page.next_cursor {
                eprintln!("more: --cursor {cursor}");
            }
            Ok(())
        }
        SourceCommand::Replay {
            id,
            event_id,
            client: args,
        } => print(&client(&args)?.replay_event(&id, &event_id).await?),
    }
}

pub async fn queue_command(command: QueueCommand) -> anyhow::Result<()> {
    match command {
        QueueCommand::List { client: args } => print(&client(&args)?.list_queues().await?),
        QueueCommand::Pause { queue, client: args } => set_paused(&queue, &args, true).await,
        QueueCommand::Resume { queue, client: args } => set_paused(&queue, &args, false).await,
        QueueCommand::Policy {
            queue,
            concurrency,
            key_concurrency,
            rate,
            key_rate,
            fairness,
            weights,
            retry_budget,
            clear,
            patch,
            client: args,
        } => {
            let mut request: wire::QueuePolicyRequest = match patch {
                Some(text) => serde_json::from_str(&text)
                    .context("--patch must be a JSON object of policy fields, e.g. '{\"concurrency\":5}'")?,
                None => wire::QueuePolicyRequest::default(),
            };
            for field in &clear {
                match field.as_str() {
                    "concurrency" => request.concurrency = Some(None),
                    "key_concurrency" => request.key_concurrency = Some(None),
                    "rate" => request.rate = Some(None),
                    "key_rate" => request.key_rate = Some(None),
                    "fairness" => request.fairness = Some(None),
                    "retry_budget" => request.retry_budget = Some(None),
                    "weights" => request.weights = Some(None),
                    other => anyhow::bail!(
                        "--clear {other}: expected concurrency, key_concurrency, rate, key_rate, fairness, weights \
                         or retry_budget"
                    ),
                }
            }
            request.concurrency = concurrency.map(Some).or(request.concurrency);
            request.key_concurrency = key_concurrency.map(Some).or(request.key_concurrency);
            request.rate = rate.map(Some).or(request.rate);
            request.key_rate = key_rate.map(Some).or(request.key_rate);
            request.retry_budget = retry_budget.map(Some).or(request.retry_budget);
            if let Some(fairness) = fairness {
                let fairness = serde_json::from_value(serde_json::Value::String(fairness))
                    .context("--fairness must be flow_key")?;
                request.fairness = Some(Some(fairness));
            }
            if !weights.is_empty() {
                let mut parsed = std::collections::BTreeMap::new();
                for weight in &weights {
                    let (key, n) = weight
                        .rsplit_once('=')
                        .and_then(|(key, n)| Some((key, n.parse::<u32>().ok()?)))
                        .with_context(|| format!("--weight {weight}: expected KEY=N"))?;
                    parsed.insert(key.to_owned(), n);
                }
                request.weights = Some(Some(parsed));
            }
            let client = client(&args)?;
            let unchanged = serde_json::to_value(&request)? == serde_json::json!({});
            if unchanged {
                print(&client.queue_policy(&queue).await?)
            } else {
                print(&client.set_queue_policy(&queue, &request).await?)
            }
        }
    }
}

async fn set_paused(queue: &str, args: &ClientArgs, paused: bool) -> anyhow::Result<()> {
    let request = wire::QueuePolicyRequest {
        paused: Some(paused),
        ..wire::QueuePolicyRequest::default()
    };
    print(&client(args)?.set_queue_policy(queue, &request).await?)
}

pub async fn schedule_command(command: ScheduleCommand) -> anyhow::Result<()> {
    match command {
        ScheduleCommand::Set {
            name,
            cron,
            timezone,
            queue,
            payload,
            overlap,
            catch_up,
            client: args,
        } => {
            fn choice<T: serde::de::DeserializeOwned>(flag: &str, value: String) -> anyhow::Result<T> {
                serde_json::from_value(serde_json::Value::String(value))
                    .with_context(|| format!("--{flag}: not one of the documented values"))
            }
            let request = wire::ScheduleRequest {
                cron,
                timezone: Some(timezone),
                queue,
                payload: Some(
                    serde_json::value::RawValue::from_string(payload).context("--payload must be valid JSON")?,
                ),
                overlap: Some(choice("overlap", overlap)?),
                catch_up: Some(choice("catch-up", catch_up)?),
            };
            print(&client(&args)?.put_schedule(&name, &request).await?)
        }
        ScheduleCommand::Get { name, client: args } => print(&client(&args)?.schedule(&name).await?),
        ScheduleCommand::List { client: args } => print(&client(&args)?.list_schedules().await?),
        ScheduleCommand::Pause { name, client: args } => print(&client(&args)?.pause_schedule(&name, true).await?),
        ScheduleCommand::Resume { name, client: args } => print(&client(&args)?.pause_schedule(&name, false).await?),
        ScheduleCommand::Delete { name, client: args } => {
            client(&args)?.delete_schedule(&name).await?;
            eprintln!("schedule {name} deleted");
            Ok(())
        }
    }
}

pub async fn resource_command(command: ResourceCommand) -> anyhow::Result<()> {
    match command {
        ResourceCommand::Set {
            name,
            breaker,
            concurrency,
            rate,
            client: args,
        } => {
            let request = wire::ResourceRequest {
                breaker,
                concurrency,
                rate,
            };
            print(&client(&args)?.put_resource(&name, &request).await?)
        }
        ResourceCommand::Get { name, client: args } => print(&client(&args)?.get_resource(&name).await?),
        ResourceCommand::List { client: args } => print(&client(&args)?.list_resources().await?),
        ResourceCommand::Delete { name, client: args } => {
            client(&args)?.delete_resource(&name).await?;
            eprintln!("resource {name} deleted");
            Ok(())
        }
    }
}
