//! The webhook inbox's rules that are not storage: what each kind of
//! source signs and how (`verify`), which headers are kept, what makes two
//! deliveries the same event, and the payload of the job an event becomes.

pub mod verify;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use steadfast_core::Timestamp;

/// The digest of a configured `hmac` source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Sha256,
    Sha512,
}

/// How a configured `hmac` source's signature is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Hex,
    Base64,
}

/// The settings of a generic `hmac` source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacConfig {
    /// The header holding the signature.
    pub header: String,
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    /// Text before the signature in the header, e.g. `sha256=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A header holding the Unix time (seconds) the sender signed; the
    /// signed content is then `{timestamp}.{body}`, and the time is checked
    /// against the source's tolerance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_header: Option<String>,
    /// A JSON Pointer (RFC 6901) to the event's id in the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id_pointer: Option<String>,
}

/// What a source's deliveries are verified as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Stripe,
    Github,
    Standard,
    Shopify,
    Slack,
    Hmac(HmacConfig),
}

/// The `config` of any source: the generic kind's settings, and extra
/// headers to keep with each event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac: Option<HmacConfig>,
}

/// Most extra headers a source keeps.
pub const MAX_KEPT_HEADERS: usize = 32;
/// Longest header name a config may name.
const MAX_HEADER_NAME: usize = 128;

pub const KIND_NAMES: [&str; 6] = ["stripe", "github", "standard", "shopify", "slack", "hmac"];

impl Kind {
    /// A kind by name with its config, or what is wrong with them.
    pub fn parse(name: &str, config: &Config) -> Result<Kind, String> {
        if config.keep_headers.len() > MAX_KEPT_HEADERS {
            return Err(format!("config.keep_headers: at most {MAX_KEPT_HEADERS} headers"));
        }
        for header in &config.keep_headers {
            check_header_name("config.keep_headers", header)?;
        }
        let kind = match name {
            "stripe" => Kind::Stripe,
            "github" => Kind::Github,
            "standard" => Kind::Standard,
            "shopify" => Kind::Shopify,
            "slack" => Kind::Slack,
            "hmac" => {
                let hmac = config
                    .hmac
                    .clone()
                    .ok_or("config.hmac: required for kind hmac: {header, algorithm, encoding}")?;
                check_header_name("config.hmac.header", &hmac.header)?;
                if let Some(header) = &hmac.timestamp_header {
                    check_header_name("config.hmac.timestamp_header", header)?;
                }
                if let Some(pointer) = &hmac.event_id_pointer
                    && !(pointer.starts_with('/') && pointer.len() <= 256)
                {
                    return Err("config.hmac.event_id_pointer: a JSON Pointer such as /id (at most 256 bytes)".into());
                }
                if hmac.prefix.as_ref().is_some_and(|prefix| prefix.len() > 64) {
                    return Err("config.hmac.prefix: at most 64 bytes".into());
                }
                return Ok(Kind::Hmac(HmacConfig {
                    header: hmac.header.to_ascii_lowercase(),
                    timestamp_header: hmac.timestamp_header.map(|h| h.to_ascii_lowercase()),
                    ..hmac
                }));
            }
            other => {
                return Err(format!(
                    "kind: unknown kind {other:?}; expected one of {}",
                    KIND_NAMES.join(", ")
                ));
            }
        };
        if config.hmac.is_some() {
            return Err(format!("config.hmac: only for kind hmac, not {name}"));
        }
        Ok(kind)
    }

    /// Whether the provider makes the signing secret (so Steadfast cannot).
    pub fn provider_makes_secret(&self) -> bool {
        matches!(self, Kind::Stripe | Kind::Shopify | Kind::Slack)
    }

    /// The headers every event of this kind keeps.
    fn kept_headers(&self) -> Vec<&str> {
        let mut names = vec!["content-type", "user-agent"];
        names.extend_from_slice(match self {
            Kind::Stripe => &["stripe-signature"][..],
            Kind::Github => &[
                "x-github-event",
                "x-github-delivery",
                "x-github-hook-id",
                "x-github-hook-installation-target-id",
                "x-github-hook-installation-target-type",
                "x-hub-signature-256",
            ][..],
            Kind::Standard => &[
                "webhook-id",
                "webhook-timestamp",
                "webhook-signature",
                "svix-id",
                "svix-timestamp",
                "svix-signature",
            ][..],
            Kind::Shopify => &[
                "x-shopify-topic",
                "x-shopify-hmac-sha256",
                "x-shopify-shop-domain",
                "x-shopify-event-id",
                "x-shopify-webhook-id",
                "x-shopify-triggered-at",
                "x-shopify-api-version",
            ][..],
            Kind::Slack => &[
                "x-slack-signature",
                "x-slack-request-timestamp",
                "x-slack-retry-num",
                "x-slack-retry-reason",
            ][..],
            Kind::Hmac(_) => &[][..],
        });
        if let Kind::Hmac(config) = self {
            names.push(&config.header);
            names.extend(config.timestamp_header.as_deref());
        }
        names
    }
}

fn check_header_name(field: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_HEADER_NAME
        && axum::http::HeaderName::from_bytes(name.as_bytes()).is_ok();
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{field}: {name:?} is not a header name (at most {MAX_HEADER_NAME} bytes)"
        ))
    }
}

/// The headers an event keeps: the kind's and the config's, as a JSON
/// object of strings (repeated headers joined with `, `).
pub fn kept_headers(kind: &Kind, config: &Config, headers: &axum::http::HeaderMap) -> String {
    let mut kept = serde_json::Map::new();
    let extra = config.keep_headers.iter().map(String::as_str);
    for name in kind.kept_headers().into_iter().chain(extra) {
        let name = name.to_ascii_lowercase();
        let values: Vec<String> = headers
            .get_all(name.as_str())
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        if !values.is_empty() {
            kept.insert(name, values.join(", ").into());
        }
    }
    serde_json::Value::Object(kept).to_string()
}

/// The body's SHA-256, hex.
pub fn body_sha256(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The body's dedup key, from its [`body_sha256`].
pub fn body_key(body_sha256: &str) -> String {
    format!("sha256:{body_sha256}")
}

/// Longest event id kept; a longer one is replaced by the body's hash.
pub const MAX_EVENT_ID_BYTES: usize = 256;

/// Whether `id` could be a source's id: `src_` and 32 lower-case hex
/// digits, as [`source_id`] makes them.
pub fn is_source_id(id: &str) -> bool {
    id.strip_prefix("src_")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// Whether `id` may be kept as an event id: 1-256 bytes, no control
/// characters (storage refuses NUL, logs and URLs mangle the rest).
pub fn is_event_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_EVENT_ID_BYTES && !id.chars().any(char::is_control)
}

/// The event's id and its dedup keys: the id when the provider signs it;
/// the id and the body's hash when it does not (so a captured body sent
/// again under a new delivery id is still a duplicate); the body's hash
/// alone, as the id too, when there is no id.
pub fn identify(verified: &verify::Verified, body_sha256: &str) -> (String, Vec<String>) {
    let by_body = body_key(body_sha256);
    match &verified.event_id {
        Some(id) if is_event_id(id) => {
            let mut keys = vec![format!("id:{id}")];
            if !verified.id_signed {
                keys.push(by_body);
            }
            (id.clone(), keys)
        }
        _ => (by_body.clone(), vec![by_body]),
    }
}

/// Slack's handshake when an Events API URL is saved: a signed
/// `url_verification` whose `challenge` must be echoed. No event is stored.
pub fn slack_challenge(kind: &Kind, body: &[u8]) -> Option<String> {
    if *kind != Kind::Slack {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    if value.get("type")?.as_str()? != "url_verification" {
        return None;
    }
    value.get("challenge")?.as_str().map(str::to_owned)
}

/// The payload of the job an event becomes: `{event_id, source,
/// received_at, headers, body, body_encoding}`. `body` is the JSON as
/// received (its exact text) when the body is JSON no deeper than
/// `max_depth`, else the bytes in base64.
pub fn payload(
    event_id: &str,
    source_id: &str,
    received_at: Timestamp,
    headers: &str,
    body: &[u8],
    max_depth: usize,
) -> String {
    use serde_json::value::RawValue;

    #[derive(Serialize)]
    struct Payload<'a> {
        event_id: &'a str,
        source: &'a str,
        received_at: String,
        headers: &'a RawValue,
        body: Body<'a>,
        body_encoding: &'static str,
    }

    #[derive(Serialize)]
    #[serde(untagged)]
    enum Body<'a> {
        Json(&'a RawValue),
        Base64(String),
    }

    // The body sits one level inside the payload, which may nest `max_depth`.
    let json = std::str::from_utf8(body)
        .ok()
        .and_then(|text| serde_json::from_str::<&RawValue>(text).ok())
        .filter(|raw| steadfast_core::limits::json_depth(raw.get()) < max_depth);
    let (body, body_encoding) = match json {
        Some(raw) => (Body::Json(raw), "json"),
        None => (Body::Base64(BASE64.encode(body)), "base64"),
    };
    let empty: &RawValue = serde_json::from_str("{}").expect("valid JSON");
    let payload = Payload {
        event_id,
        source: source_id,
        received_at: received_at.to_string(),
        headers: serde_json::from_str(headers).unwrap_or(empty),
        body,
        body_encoding,
    };
    serde_json::to_string(&payload).expect("a payload serialises")
}

/// A source's id: 128 random bits, so it can be neither guessed nor
/// enumerated, and names no tenant.
pub fn source_id(random: [u64; 2]) -> String {
    format!("src_{:016x}{:016x}", random[0], random[1])
}

pub fn secret_id(random: u64) -> String {
    format!("sec_{random:016x}")
}

/// A secret Steadfast makes for a kind whose sender takes any secret:
/// 256 random bits, written as Standard Webhooks expects (`whsec_` and
/// base64), or in hex for the others.
pub fn new_secret(kind: &Kind, random: [u64; 4]) -> String {
    let bytes: Vec<u8> = random.iter().flat_map(|word| word.to_le_bytes()).collect();
    match kind {
        Kind::Standard => format!("whsec_{}", BASE64.encode(&bytes)),
        _ => hex::encode(&bytes),
    }
}

/// What is wrong with a secret a user gave, if anything.
pub fn check_secret(kind: &Kind, secret: &str) -> Result<(), String> {
    if !(8..=512).contains(&secret.len()) {
        return Err("secret: between 8 and 512 bytes".into());
    }
    if secret.chars().any(char::is_control) {
        return Err("secret: no control characters".into());
    }
    if *kind == Kind::Standard {
        let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
        let key = BASE64
            .decode(encoded)
            .map_err(|_| "secret: a Standard Webhooks secret is whsec_ followed by base64".to_owned())?;
        if key.len() < 16 {
            return Err("secret: a Standard Webhooks key must be at least 16 bytes".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(event_id: Option<&str>, id_signed: bool) -> verify::Verified {
        verify::Verified {
            secret_id: "sec".into(),
            timestamp: None,
            event_id: event_id.map(str::to_owned),
            id_signed,
        }
    }

    #[test]
    fn unsigned_ids_are_backed_by_the_bodys_hash() {
        let body = &body_sha256(b"{}");
        let (id, keys) = identify(&verified(Some("evt_1"), true), body);
        assert_eq!((id.as_str(), keys), ("evt_1", vec!["id:evt_1".to_owned()]));
        let (id, keys) = identify(&verified(Some("d-1"), false), body);
        assert_eq!(id, "d-1");
        assert_eq!(keys, ["id:d-1".to_owned(), body_key(body)]);
        let (id, keys) = identify(&verified(None, true), body);
        assert_eq!((id.clone(), keys), (body_key(body), vec![body_key(body)]));
        let long = "x".repeat(MAX_EVENT_ID_BYTES + 1);
        assert_eq!(identify(&verified(Some(&long), true), body).0, body_key(body));
    }

    #[test]
    fn the_payload_keeps_json_as_sent_and_anything_else_in_base64() {
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let json = payload("e", "src", at, r#"{"a":"b"}"#, br#"{"x": [1, 2]}"#, 64);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["body"], serde_json::json!({"x": [1, 2]}));
        assert_eq!(value["body_encoding"], "json");
        assert_eq!(value["headers"]["a"], "b");
        assert_eq!(value["received_at"], at.to_string());
        let form = payload("e", "src", at, "{}", b"a=1&b=2", 64);
        let value: serde_json::Value = serde_json::from_str(&form).unwrap();
        assert_eq!(
            (value["body"].as_str(), value["body_encoding"].as_str()),
            (Some("YT0xJmI9Mg=="), Some("base64"))
        );
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let encoding = |depth: usize| -> serde_json::Value {
            let json = payload("e", "src", at, "{}", nested(depth).as_bytes(), 64);
            assert!(
                steadfast_core::limits::json_depth(&json) <= 64,
                "the payload stays within the limit"
            );
            serde_json::from_str::<serde_json::Value>(&json).unwrap()["body_encoding"].clone()
        };
        assert_eq!(encoding(63), "json");
        assert_eq!(encoding(64), "base64", "64 levels inside the payload would be 65");
    }

    #[test]
    fn only_ids_steadfast_makes_name_sources() {
        assert!(is_source_id(&source_id([u64::MAX, 7])));
        for bad in ["", "src_", "src_0123", "src_0123456789ABCDEF0123456789abcdef", "src_\0"] {
            assert!(!is_source_id(bad), "{bad:?}");
        }
        assert!(is_event_id("evt_1") && !is_event_id("evt\u{0}1") && !is_event_id(""));
    }

    #[test]
    fn configs_are_checked() {
        let hmac = |header: &str| Config {
            hmac: Some(HmacConfig {
                header: header.into(),
                algorithm: Algorithm::Sha512,
                encoding: Encoding::Base64,
                prefix: None,
                timestamp_header: None,
                event_id_pointer: Some("/id".into()),
            }),
            ..Config::default()
        };
        assert!(matches!(Kind::parse("hmac", &hmac("X-Sig")), Ok(Kind::Hmac(c)) if c.header == "x-sig"));
        assert!(Kind::parse("hmac", &hmac("bad header")).is_err());
        assert!(Kind::parse("hmac", &Config::default()).is_err());
        assert!(
            Kind::parse("stripe", &hmac("x")).is_err(),
            "hmac settings only for hmac"
        );
        assert!(Kind::parse("paypal", &Config::default()).is_err());
        assert!(check_secret(&Kind::Standard, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        assert!(check_secret(&Kind::Standard, "whsec_not base64!").is_err());
        assert!(check_secret(&Kind::Github, "short").is_err());
    }
}
