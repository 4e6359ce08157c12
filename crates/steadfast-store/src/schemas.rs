//! Versioned payload schemas: each queue's JSON Schemas (draft 2020-12),
//! one per version, immutable once registered, and the rule that decides
//! whether a new version breaks payloads the previous one accepted.
//!
//! Validating payloads is the server's (it compiles the schemas with a JSON
//! Schema library); the store keeps the versions and decides registrations,
//! so both backends refuse the same changes.

use async_trait::async_trait;
use jiff::Timestamp;
use serde_json::{Map, Value};
use steadfast_core::{QueueName, Reason};

use crate::{StoreError, TenantScope};

/// The most schema versions a tenant keeps, over all its queues.
pub const MAX_VERSIONS_PER_TENANT: usize = 1000;

/// One registered version of a queue's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadSchema {
    pub queue: QueueName,
    pub version: u32,
    /// The JSON Schema of payloads, as canonical JSON text.
    pub schema: String,
    /// The JSON Schema of outputs, if outputs are checked.
    pub output_schema: Option<String>,
    /// Registered although it breaks the previous version.
    pub forced: bool,
    pub reason: Option<String>,
    pub created_at: Timestamp,
}

/// A request to register `version` of a queue's schema.
#[derive(Debug, Clone)]
pub struct SchemaRegistration {
    pub version: u32,
    /// Canonical JSON text of an already compiled (so valid) schema.
    pub schema: String,
    pub output_schema: Option<String>,
    /// Register even if the version breaks the previous one; needs `reason`.
    pub force: bool,
    pub reason: Option<Reason>,
}

/// What a registration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    Created(PayloadSchema),
    /// The version was already registered with this exact content.
    Unchanged(PayloadSchema),
}

impl Registered {
    pub fn schema(&self) -> &PayloadSchema {
        match self {
            Registered::Created(schema) | Registered::Unchanged(schema) => schema,
        }
    }
}

/// Why a payload, an output or a new schema version was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON Pointer: into the payload or output, or into the new schema.
    pub pointer: String,
    /// The JSON Schema keyword that failed (`required`, `type`, …), or the
    /// compatibility rule a new version broke (`required_added`, …).
    pub rule: String,
    pub message: String,
}

/// The most violations reported for one payload or schema.
pub const MAX_VIOLATIONS: usize = 50;

/// The newest version of one queue's schema, and whether any version
/// checks outputs: what the server needs to know before it validates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaHead {
    pub queue: QueueName,
    pub latest: u32,
    pub checks_outputs: bool,
}

#[async_trait]
pub trait SchemaStore: Send + Sync {
    /// Registers a version (audited as `queue.schema_registered`); see
    /// [`crate::decide::register_schema`] for what is refused.
    async fn register_schema(
        &self,
        scope: &TenantScope,
        queue: &QueueName,
        registration: SchemaRegistration,
        now: Timestamp,
    ) -> Result<Registered, StoreError>;

    /// Every version of the tenant's schemas (of one queue if given), by
    /// queue then version. Bounded by [`MAX_VERSIONS_PER_TENANT`].
    async fn schemas(&self, scope: &TenantScope, queue: Option<&QueueName>) -> Result<Vec<PayloadSchema>, StoreError>;

    /// One version of a queue's schema.
    async fn schema(
        &self,
        scope: &TenantScope,
        queue: &QueueName,
        version: u32,
    ) -> Result<Option<PayloadSchema>, StoreError>;

    /// The newest version of each of the tenant's queues that has a schema.
    async fn schema_heads(&self, scope: &TenantScope) -> Result<Vec<SchemaHead>, StoreError>;
}

/// The changes from `old` to `new` that can refuse a payload `old`
/// accepted, each with where it is in `new`. Empty means compatible.
///
/// The comparison is structural and conservative: it follows `properties`,
/// `additionalProperties` and `items`, and compares `type`, `required`,
/// `enum`/`const`, bounds, `pattern` and `format`. Adding an optional
/// property is compatible. A change to any other keyword (`anyOf`, `$ref`,
/// `$defs`, `if`, …) is reported, because it cannot be proven harmless
/// this way; annotations (`title`, `description`, `default`, …) are ignored.
pub fn compatibility(old: &Value, new: &Value) -> Vec<Violation> {
    let mut found = Vec::new();
    compare(old, new, "", &mut found);
    found.truncate(MAX_VIOLATIONS);
    found
}

/// Keywords that never change which payloads are valid.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$anchor",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// Keywords `compare` understands.
const COMPARED: &[&str] = &[
    "type",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "multipleOf",
    "uniqueItems",
    "pattern",
    "format",
];

/// Lower bounds: raising one refuses values that passed.
const LOWER_BOUNDS: &[&str] = &["minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties"];
/// Upper bounds: lowering one refuses values that passed.
const UPPER_BOUNDS: &[&str] = &["maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties"];

fn compare(old: &Value, new: &Value, at: &str, found: &mut Vec<Violation>) {
    if old == new {
        return;
    }
    let accept_all = Map::new();
    let old = match old {
        // Nothing passed before, so nothing can stop passing.
        Value::Bool(false) => return,
        Value::Object(old) => old,
        _ => &accept_all,
    };
    let new = match new {
        Value::Object(new) => new,
        Value::Bool(false) => {
            found.push(broken(at, "rejects_all", "the new schema accepts nothing here".into()));
            return;
        }
        _ => return,
    };
    compare_types(old, new, at, found);
    compare_required(old, new, at, found);
    compare_properties(old, new, at, found);
    compare_values(old, new, at, found);
    compare_bounds(old, new, at, found);
    if let Some(items) = either(old, new, "items") {
        compare(items.0, items.1, &child(at, "items"), found);
    }
    for keyword in ["pattern", "format"] {
        if let Some(value) = new.get(keyword)
            && old.get(keyword) != Some(value)
        {
            found.push(broken(
                &child(at, keyword),
                if keyword == "pattern" {
                    "pattern_changed"
                } else {
                    "format_changed"
                },
                format!("`{keyword}` is now {value}"),
            ));
        }
    }
    compare_unknown(old, new, at, found);
}

fn compare_types(old: &Map<String, Value>, new: &Map<String, Value>, at: &str, found: &mut Vec<Violation>) {
    let Some(new_types) = types(new) else { return };
    let lost: Vec<&str> = match types(old) {
        None => vec!["any"],
        Some(old_types) => old_types
            .into_iter()
            .filter(|old_type| {
                let still_accepted =
                    new_types.contains(old_type) || (*old_type == "integer" && new_types.contains(&"number"));
                !still_accepted
            })
            .collect(),
    };
    if !lost.is_empty() {
        found.push(broken(
            &child(at, "type"),
            "type_narrowed",
            format!("values of type {} are no longer accepted", lost.join(", ")),
        ));
    }
}

fn types(schema: &Map<String, Value>) -> Option<Vec<&str>> {
    match schema.get("type")? {
        Value::String(one) => Some(vec![one.as_str()]),
        Value::Array(many) => Some(many.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

fn compare_required(old: &Map<String, Value>, new: &Map<String, Value>, at: &str, found: &mut Vec<Violation>) {
    let names = |schema: &Map<String, Value>| -> Vec<String> {
        match schema.get("required") {
            Some(Value::Array(names)) => names.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect(),
            _ => Vec::new(),
        }
    };
    let before = names(old);
    for name in names(new).into_iter().filter(|name| !before.contains(name)) {
        found.push(broken(
            &child(at, "required"),
            "required_added",
            format!("`{name}` is now required"),
        ));
    }
}

fn compare_properties(old: &Map<String, Value>, new: &Map<String, Value>, at: &str, found: &mut Vec<Violation>) {
    let empty = Map::new();
    let properties = |schema: &Map<String, Value>| match schema.get("properties") {
        Some(Value::Object(properties)) => properties.clone(),
        _ => empty.clone(),
    };
    let (old_properties, new_properties) = (properties(old), properties(new));
    let accept_all = Value::Bool(true);
    let old_rest = old.get("additionalProperties").unwrap_or(&accept_all);
    let new_rest = new.get("additionalProperties").unwrap_or(&accept_all);
    for (name, old_property) in &old_properties {
        let at_property = child(&child(at, "properties"), name);
        match new_properties.get(name) {
            Some(new_property) => compare(old_property, new_property, &at_property, found),
            None if new_rest == &Value::Bool(false) => found.push(broken(
                &child(at, "additionalProperties"),
                "property_removed",
                format!("`{name}` is no longer allowed"),
            )),
            None => compare(old_property, new_rest, &child(at, "additionalProperties"), found),
        }
    }
    // A property new in `new` was covered by `old`'s additionalProperties.
    // Where that was an explicit schema, the new property must accept what
    // it did; where it was open (absent or `true`), adding an optional
    // property is accepted as compatible (see above).
    if old_rest.is_object() {
        for (name, new_property) in new_properties
            .iter()
            .filter(|(name, _)| !old_properties.contains_key(*name))
        {
            compare(old_rest, new_property, &child(&child(at, "properties"), name), found);
        }
    }
    if new_rest == &Value::Bool(false) && old_rest != &Value::Bool(false) {
        found.push(broken(
            &child(at, "additionalProperties"),
            "additional_properties_closed",
            "properties not listed are no longer allowed".into(),
        ));
    } else {
        compare(old_rest, new_rest, &child(at, "additionalProperties"), found);
    }
}

/// `enum` and `const`: every value allowed before must still be allowed.
fn compare_values(old: &Map<String, Value>, new: &Map<String, Value>, at: &str, found: &mut Vec<Violation>) {
    let allowed = |schema: &Map<String, Value>| -> Option<(Vec<Value>, &'static str)> {
        if let Some(value) = schema.get("const") {
            return Some((vec![value.clone()], "const"));
        }
        match schema.get("enum") {
            Some(Value::Array(values)) => Some((values.clone(), "enum")),
            _ => None,
        }
    };
    let Some((now_allowed, keyword)) = allowed(new) else {
        return;
    };
    let at = child(at, keyword);
    match allowed(old) {
        None => found.push(broken(
            &at,
            "enum_added",
            "values are now limited to a fixed list".into(),
        )),
        Some((before, _)) => {
            let dropped: Vec<String> = before
                .iter()
                .filter(|value| !now_allowed.contains(value))
                .take(5)
                .map(Value::to_string)
                .collect();
            if !dropped.is_empty() {
                found.push(broken(
                    &at,
                    "enum_narrowed",
                    format!("no longer allowed: {}", dropped.join(", ")),
                ));
            }
        }
    }
}

fn compare_bounds(old: &Map<String, Value>, new: &Map<String, Value>, at: &str, found: &mut Vec<Violation>) {
    let bound = |schema: &Map<String, Value>, keyword: &str| schema.get(keyword).and_then(Value::as_f64);
    for (keywords, tighter) in [
        (LOWER_BOUNDS, (|old: f64, new: f64| new > old) as fn(f64, f64) -> bool),
        (UPPER_BOUNDS, |old: f64, new: f64| new < old),
    ] {
        for keyword in keywords {
            let Some(now) = bound(new, keyword) else { continue };
            let narrowed = bound(old, keyword).is_none_or(|before| tighter(before, now));
            if narrowed {
                found.push(broken(
                    &child(at, keyword),
                    "bound_tightened",
                    format!("`{keyword}` is now {now}"),
                ));
            }
        }
    }
    if let Some(now) = bound(new, "multipleOf") {
        let still_divides = bound(old, "multipleOf").is_some_and(|before| (before / now).fract() == 0.0);
        if !still_divides {
            found.push(broken(
                &child(at, "multipleOf"),
                "bound_tightened",
                format!("`multipleOf` is now {now}"),
            ));
        }
    }
    if new.get("uniqueItems") == Some(&Value::Bool(true)) && old.get("uniqueItems") != Some(&Value::Bool(true)) {
        found.push(broken(
            &child(at, "uniqueItems"),
            "bound_tightened",
            "items must now be unique".into(),
        ));
    }
}

/// Keywords neither compared nor annotations: any change is reported.
fn compare_unknown(old: &Map<String, Value>, new: &Map<String, Value>, at: &str, found: &mut Vec<Violation>) {
    let mut keywords: Vec<&String> = old.keys().chain(new.keys()).collect();
    keywords.sort();
    keywords.dedup();
    for keyword in keywords {
        let known = ANNOTATIONS.contains(&keyword.as_str()) || COMPARED.contains(&keyword.as_str());
        if !known && old.get(keyword) != new.get(keyword) {
            found.push(broken(
                &child(at, keyword),
                "unsupported_change",
                format!(
                    "`{keyword}` changed, and whether every payload accepted before still passes cannot be checked"
                ),
            ));
        }
    }
}

/// The keyword's schemas in both versions when either has one; a side
/// without it accepts everything there.
fn either<'a>(
    old: &'a Map<String, Value>,
    new: &'a Map<String, Value>,
    keyword: &str,
) -> Option<(&'a Value, &'a Value)> {
    const ACCEPT_ALL: &Value = &Value::Bool(true);
    match (old.get(keyword), new.get(keyword)) {
        (None, None) => None,
        (before, now) => Some((before.unwrap_or(ACCEPT_ALL), now.unwrap_or(ACCEPT_ALL))),
    }
}

/// `at` extended by one JSON Pointer token (RFC 6901 escaping).
fn child(at: &str, token: &str) -> String {
    format!("{at}/{}", token.replace('~', "~0").replace('/', "~1"))
}

fn broken(at: &str, rule: &str, message: String) -> Violation {
    Violation {
        pointer: at.to_owned(),
        rule: rule.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rules(old: Value, new: Value) -> Vec<(String, String)> {
        let mut found: Vec<_> = compatibility(&old, &new)
            .into_iter()
            .map(|found| (found.pointer, found.rule))
            .collect();
        found.sort();
        found
    }

    fn expected(found: &[(&str, &str)]) -> Vec<(String, String)> {
        found
            .iter()
            .map(|(at, rule)| (at.to_string(), rule.to_string()))
            .collect()
    }

    fn order() -> Value {
        json!({
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": {"type": "string"},
                "amount": {"type": "integer", "minimum": 0},
                "currency": {"enum": ["usd", "eur"]},
                "lines": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string"}}}}
            }
        })
    }

    #[test]
    fn the_same_schema_and_annotations_are_compatible() {
        assert_eq!(rules(order(), order()), expected(&[]));
        let mut described = order();
        described["description"] = json!("an order");
        described["properties"]["id"]["title"] = json!("Order id");
        assert_eq!(rules(order(), described), expected(&[]));
    }

    #[test]
    fn widening_is_compatible() {
        let mut wider = order();
        wider["properties"]["amount"] = json!({"type": "number"});
        wider["properties"]["currency"] = json!({"enum": ["usd", "eur", "gbp"]});
        wider["properties"]["note"] = json!({"type": "string"});
        wider["required"] = json!([]);
        assert_eq!(rules(order(), wider), expected(&[]));
    }

    #[test]
    fn a_new_required_field_breaks() {
        let mut stricter = order();
        stricter["required"] = json!(["id", "amount"]);
        assert_eq!(rules(order(), stricter), expected(&[("/required", "required_added")]));
    }

    #[test]
    fn a_narrowed_type_breaks_however_deep() {
        let mut narrower = order();
        narrower["properties"]["lines"]["items"]["properties"]["sku"] = json!({"type": "integer"});
        narrower["properties"]["amount"]["type"] = json!("string");
        assert_eq!(
            rules(order(), narrower),
            expected(&[
                ("/properties/amount/type", "type_narrowed"),
                ("/properties/lines/items/properties/sku/type", "type_narrowed"),
            ])
        );
    }

    #[test]
    fn narrowed_values_and_bounds_break() {
        let mut narrower = order();
        narrower["properties"]["currency"] = json!({"const": "usd"});
        narrower["properties"]["amount"]["minimum"] = json!(1);
        narrower["properties"]["id"]["maxLength"] = json!(10);
        narrower["properties"]["id"]["pattern"] = json!("^o_");
        assert_eq!(
            rules(order(), narrower),
            expected(&[
                ("/properties/amount/minimum", "bound_tightened"),
                ("/properties/currency/const", "enum_narrowed"),
                ("/properties/id/maxLength", "bound_tightened"),
                ("/properties/id/pattern", "pattern_changed"),
            ])
        );
    }

    #[test]
    fn closing_or_removing_properties_breaks() {
        let mut closed = order();
        closed["additionalProperties"] = json!(false);
        assert_eq!(
            rules(order(), closed.clone()),
            expected(&[("/additionalProperties", "additional_properties_closed")])
        );
        let mut removed = closed.clone();
        removed["properties"].as_object_mut().unwrap().remove("amount");
        assert_eq!(
            rules(closed, removed),
            expected(&[("/additionalProperties", "property_removed")])
        );
        // An open object may drop a property's rules: anything passes there now.
        let mut dropped = order();
        dropped["properties"].as_object_mut().unwrap().remove("amount");
        assert_eq!(rules(order(), dropped), expected(&[]));
    }

    #[test]
    fn a_new_property_must_accept_what_explicit_additional_properties_did() {
        let typed_rest = json!({"type": "object", "additionalProperties": {"type": "string"}});
        let mut narrower = typed_rest.clone();
        narrower["properties"] = json!({"x": {"type": "integer"}});
        assert_eq!(
            rules(typed_rest.clone(), narrower),
            expected(&[("/properties/x/type", "type_narrowed")])
        );
        let mut same = typed_rest.clone();
        same["properties"] = json!({"x": {"type": "string", "description": "named now"}});
        assert_eq!(rules(typed_rest, same), expected(&[]));
    }

    #[test]
    fn keywords_it_cannot_compare_are_reported_when_they_change() {
        let mut combined = order();
        combined["properties"]["amount"] = json!({"anyOf": [{"type": "integer"}, {"type": "null"}]});
        assert_eq!(
            rules(order(), combined),
            expected(&[("/properties/amount/anyOf", "unsupported_change")])
        );
        let mut rejecting = order();
        rejecting["properties"]["id"] = json!(false);
        assert_eq!(
            rules(order(), rejecting),
            expected(&[("/properties/id", "rejects_all")])
        );
        assert_eq!(
            rules(json!(true), json!({"type": "object"})),
            expected(&[("/type", "type_narrowed")])
        );
    }
}
