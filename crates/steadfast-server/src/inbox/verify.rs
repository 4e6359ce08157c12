//! Signature verification, each kind exactly as its provider specifies,
//! over the exact bytes received. Every comparison of a signature is
//! constant-time (`Mac::verify_slice`), and the presented signature is
//! decoded first, so a malformed one is refused without comparing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha512};
use steadfast_core::Timestamp;
use steadfast_store::SourceSecret;

use super::{Algorithm, Encoding, HmacConfig, Kind};

/// Why a delivery was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Missing or malformed signature headers, or no secret matches.
    SignatureInvalid,
    /// The signature matched, but the signed timestamp is too far from now.
    TimestampOutOfTolerance,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::SignatureInvalid => "signature_invalid",
            Refusal::TimestampOutOfTolerance => "timestamp_out_of_tolerance",
        }
    }
}

/// A delivery whose signature matched one of the source's secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub secret_id: String,
    /// The timestamp the provider signed, in Unix seconds, if it signs one.
    pub timestamp: Option<i64>,
    /// The provider's event id as the kind defines it, before any fallback.
    pub event_id: Option<String>,
    /// Whether the signature covers `event_id`. An unsigned id is not
    /// trusted alone for deduplication: the body's hash is a key as well.
    pub id_signed: bool,
}

/// The request's headers, by lower-case name.
pub trait Headers {
    fn get(&self, name: &str) -> Option<&[u8]>;

    fn text(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|value| std::str::from_utf8(value).ok())
    }
}

impl Headers for axum::http::HeaderMap {
    fn get(&self, name: &str) -> Option<&[u8]> {
        axum::http::HeaderMap::get(self, name).map(|value| value.as_bytes())
    }
}

/// Checks a delivery against every secret of the source valid at `now`.
pub fn verify(
    kind: &Kind,
    secrets: &[SourceSecret],
    headers: &impl Headers,
    body: &[u8],
    now: Timestamp,
    tolerance: std::time::Duration,
) -> Result<Verified, Refusal> {
    let valid: Vec<&SourceSecret> = secrets.iter().filter(|secret| secret.valid_at(now)).collect();
    let verified = match kind {
        Kind::Stripe => stripe(&valid, headers, body),
        Kind::Github => github(&valid, headers, body),
        Kind::Standard => standard(&valid, headers, body),
        Kind::Shopify => shopify(&valid, headers, body),
        Kind::Slack => slack(&valid, headers, body),
        Kind::Hmac(config) => generic(config, &valid, headers, body),
    }?;
    if let Some(signed_at) = verified.timestamp {
        let skew = now.as_second().abs_diff(signed_at);
        if skew > tolerance.as_secs() {
            return Err(Refusal::TimestampOutOfTolerance);
        }
    }
    Ok(verified)
}

/// Most signatures one delivery may present: each costs a comparison per
/// secret, and senders send one or two (Stripe and Standard Webhooks
/// during a rotation).
const MAX_PRESENTED: usize = 8;

/// The first secret whose key, from `key_of`, signs `signed` as one of
/// `presented`: both lists are short (at most 10 valid secrets, at most
/// [`MAX_PRESENTED`] signatures), and the HMAC is computed once per secret.
fn matching<'a, D: Mac + hmac::digest::KeyInit + Clone>(
    secrets: &[&'a SourceSecret],
    key_of: impl Fn(&SourceSecret) -> Option<Vec<u8>>,
    signed: &[&[u8]],
    presented: &[Vec<u8>],
) -> Option<&'a SourceSecret> {
    secrets.iter().copied().find(|secret| {
        let Some(key) = key_of(secret) else {
            return false;
        };
        let Ok(mut mac) = <D as hmac::digest::KeyInit>::new_from_slice(&key) else {
            return false;
        };
        for part in signed {
            mac.update(part);
        }
        presented
            .iter()
            .any(|signature| mac.clone().verify_slice(signature).is_ok())
    })
}

fn raw_key(secret: &SourceSecret) -> Option<Vec<u8>> {
    Some(secret.value.as_bytes().to_vec())
}

fn json_string_field(body: &[u8], field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get(field)?.as_str().map(str::to_owned)
}

/// A signed timestamp header: its text exactly as received (what was
/// signed) and its value in Unix seconds.
fn timestamp_header<'h>(headers: &'h impl Headers, name: &str) -> Result<(&'h str, i64), Refusal> {
    let text = headers.text(name).ok_or(Refusal::SignatureInvalid)?;
    let seconds = text.parse().map_err(|_| Refusal::SignatureInvalid)?;
    Ok((text, seconds))
}

fn too_many(presented: &[Vec<u8>]) -> Result<(), Refusal> {
    if presented.len() > MAX_PRESENTED {
        return Err(Refusal::SignatureInvalid);
    }
    Ok(())
}

/// `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, HMAC-SHA256 over
/// `{t}.{body}` keyed with the whole `whsec_…` string. Other schemes
/// (`v0=`, test-mode extras) are ignored. The id is the body's `id`.
fn stripe(secrets: &[&SourceSecret], headers: &impl Headers, body: &[u8]) -> Result<Verified, Refusal> {
    let header = headers.text("stripe-signature").ok_or(Refusal::SignatureInvalid)?;
    let mut timestamp = None;
    let mut presented = Vec::new();
    for item in header.split(',') {
        match item.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => presented.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Refusal::SignatureInvalid)?;
    too_many(&presented)?;
    // Stripe's libraries sign the number as they print it; so do we.
    let prefix = format!("{timestamp}.");
    let secret = matching::<Hmac<Sha256>>(secrets, raw_key, &[prefix.as_bytes(), body], &presented)
        .ok_or(Refusal::SignatureInvalid)?;
    Ok(Verified {
        secret_id: secret.id.clone(),
        timestamp: Some(timestamp),
        event_id: json_string_field(body, "id"),
        id_signed: true,
    })
}

/// `X-Hub-Signature-256: sha256=<hex>` over the body. The id is
/// `X-GitHub-Delivery`, which is not signed.
fn github(secrets: &[&SourceSecret], headers: &impl Headers, body: &[u8]) -> Result<Verified, Refusal> {
    let header = headers.text("x-hub-signature-256").ok_or(Refusal::SignatureInvalid)?;
    let signature = header
        .strip_prefix("sha256=")
        .and_then(|hex_text| hex::decode(hex_text).ok())
        .ok_or(Refusal::SignatureInvalid)?;
    let secret = matching::<Hmac<Sha256>>(secrets, raw_key, &[body], &[signature]).ok_or(Refusal::SignatureInvalid)?;
    Ok(Verified {
        secret_id: secret.id.clone(),
        timestamp: None,
        event_id: headers.text("x-github-delivery").map(str::to_owned),
        id_signed: false,
    })
}

/// The key of a Standard Webhooks secret: the base64 after `whsec_`.
fn standard_key(secret: &SourceSecret) -> Option<Vec<u8>> {
    let encoded = secret.value.strip_prefix("whsec_").unwrap_or(&secret.value);
    BASE64.decode(encoded).ok()
}

/// Standard Webhooks (and Svix, whose `svix-` headers are the same):
/// `webhook-signature` holds space-separated `v1,<base64>` signatures of
/// `{webhook-id}.{webhook-timestamp}.{body}`. The id is `webhook-id`, signed.
fn standard(secrets: &[&SourceSecret], headers: &impl Headers, body: &[u8]) -> Result<Verified, Refusal> {
    let header = |name: &str| {
        headers
            .text(&format!("webhook-{name}"))
            .or_else(|| headers.text(&format!("svix-{name}")))
    };
    let id = header("id").ok_or(Refusal::SignatureInvalid)?;
    let timestamp_text = header("timestamp").ok_or(Refusal::SignatureInvalid)?;
    let timestamp: i64 = timestamp_text.parse().map_err(|_| Refusal::SignatureInvalid)?;
    let presented: Vec<Vec<u8>> = header("signature")
        .ok_or(Refusal::SignatureInvalid)?
        .split(' ')
        .filter_map(|signature| signature.strip_prefix("v1,"))
        .filter_map(|encoded| BASE64.decode(encoded).ok())
        .collect();
    too_many(&presented)?;
    let signed: [&[u8]; 5] = [id.as_bytes(), b".", timestamp_text.as_bytes(), b".", body];
    let secret =
        matching::<Hmac<Sha256>>(secrets, standard_key, &signed, &presented).ok_or(Refusal::SignatureInvalid)?;
    Ok(Verified {
        secret_id: secret.id.clone(),
        timestamp: Some(timestamp),
        event_id: Some(id.to_owned()),
        id_signed: true,
    })
}

/// `X-Shopify-Hmac-Sha256: <base64>` over the body. The id is
/// `X-Shopify-Event-Id`, which is not signed.
fn shopify(secrets: &[&SourceSecret], headers: &impl Headers, body: &[u8]) -> Result<Verified, Refusal> {
    let signature = headers
        .text("x-shopify-hmac-sha256")
        .and_then(|encoded| BASE64.decode(encoded.trim()).ok())
        .ok_or(Refusal::SignatureInvalid)?;
    let secret = matching::<Hmac<Sha256>>(secrets, raw_key, &[body], &[signature]).ok_or(Refusal::SignatureInvalid)?;
    Ok(Verified {
        secret_id: secret.id.clone(),
        timestamp: None,
        event_id: headers.text("x-shopify-event-id").map(str::to_owned),
        id_signed: false,
    })
}

/// `X-Slack-Signature: v0=<hex>` of `v0:{X-Slack-Request-Timestamp}:{body}`.
/// The id is the body's `event_id` (Events API), signed with the body.
fn slack(secrets: &[&SourceSecret], headers: &impl Headers, body: &[u8]) -> Result<Verified, Refusal> {
    let (timestamp_text, timestamp) = timestamp_header(headers, "x-slack-request-timestamp")?;
    let signature = headers
        .text("x-slack-signature")
        .and_then(|header| header.strip_prefix("v0="))
        .and_then(|hex_text| hex::decode(hex_text).ok())
        .ok_or(Refusal::SignatureInvalid)?;
    let signed: [&[u8]; 4] = [b"v0:", timestamp_text.as_bytes(), b":", body];
    let secret = matching::<Hmac<Sha256>>(secrets, raw_key, &signed, &[signature]).ok_or(Refusal::SignatureInvalid)?;
    Ok(Verified {
        secret_id: secret.id.clone(),
        timestamp: Some(timestamp),
        event_id: json_string_field(body, "event_id"),
        id_signed: true,
    })
}

/// A configured HMAC: the signature header (after an optional prefix) in
/// hex or base64, over the body, or over `{timestamp}.{body}` when a
/// timestamp header is configured. The id is read from the body (signed).
fn generic(
    config: &HmacConfig,
    secrets: &[&SourceSecret],
    headers: &impl Headers,
    body: &[u8],
) -> Result<Verified, Refusal> {
    let header = headers.text(&config.header).ok_or(Refusal::SignatureInvalid)?.trim();
    let encoded = match &config.prefix {
        Some(prefix) => header.strip_prefix(prefix.as_str()).ok_or(Refusal::SignatureInvalid)?,
        None => header,
    };
    let signature = match config.encoding {
        Encoding::Hex => hex::decode(encoded).ok(),
        Encoding::Base64 => BASE64.decode(encoded).ok(),
    }
    .ok_or(Refusal::SignatureInvalid)?;
    let timestamp = config
        .timestamp_header
        .as_deref()
        .map(|name| timestamp_header(headers, name))
        .transpose()?;
    let (timestamp_text, separator) = match timestamp {
        Some((text, _)) => (text, "."),
        None => ("", ""),
    };
    let signed: [&[u8]; 3] = [timestamp_text.as_bytes(), separator.as_bytes(), body];
    let timestamp = timestamp.map(|(_, seconds)| seconds);
    let secret = match config.algorithm {
        Algorithm::Sha256 => matching::<Hmac<Sha256>>(secrets, raw_key, &signed, &[signature]),
        Algorithm::Sha512 => matching::<Hmac<Sha512>>(secrets, raw_key, &signed, &[signature]),
    }
    .ok_or(Refusal::SignatureInvalid)?;
    let event_id = config.event_id_pointer.as_deref().and_then(|pointer| {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        match value.pointer(pointer)? {
            serde_json::Value::String(id) => Some(id.clone()),
            serde_json::Value::Number(id) => Some(id.to_string()),
            _ => None,
        }
    });
    Ok(Verified {
        secret_id: secret.id.clone(),
        timestamp,
        event_id,
        id_signed: true,
    })
}
