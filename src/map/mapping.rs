//! Configurable Segment → LaunchDarkly mappings: `[[segment_source.mapping]]`
//! read into [`Mappings`], with the field names of Segment's own
//! LaunchDarkly (Actions) destination (`trackEvent` is `custom`,
//! `aliasUser` is `alias`).
//!
//! Owns the mapping's form as written ([`MappingSpec`], also what a batch
//! stores so its retries map the same way), field values (`$.a.b` paths,
//! lists, literals), the default set (Segment's destination defaults) and a
//! mapping's label and short hash. Applying a mapping to a call is
//! `segment_to_ld`'s job.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha1::{Digest, Sha1};

use super::trigger::{Dialect, Trigger};

/// One mapping as written: TOML values turned into JSON, absent keys
/// `None`. Serialised with every default filled in, it is the mapping's
/// text (hashed for its short id, stored with each batch formed with it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSpec {
    /// `custom` (Segment's trackEvent) or `alias` (aliasUser).
    pub action: String,
    /// Which calls it takes (FQL); default per action, as in Segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// `false` keeps the mapping written but turned off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_name: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_kind: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_context_keys: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_properties: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_key: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Value>,
}

/// Why a mapping cannot be used: the key at fault (`action`, `trigger`, a
/// field name) and what is wrong; `offset` is inside a trigger's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SpecError {
    pub key: &'static str,
    pub message: String,
    pub offset: Option<usize>,
}

fn spec_error(key: &'static str, message: impl Into<String>) -> SpecError {
    SpecError {
        key,
        message: message.into(),
        offset: None,
    }
}

/// What a mapping sends: Segment's two LaunchDarkly actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// trackEvent: a `custom` event.
    Custom,
    /// aliasUser: an `alias` event.
    Alias,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Custom => "custom",
            Action::Alias => "alias",
        }
    }

    /// The trigger Segment's destination subscribes the action with.
    fn default_trigger(self) -> &'static str {
        match self {
            Action::Custom => r#"type = "track""#,
            Action::Alias => r#"type = "identify" or type = "alias""#,
        }
    }

    /// The fields the action reads, and which of them it cannot do without.
    fn fields(self) -> &'static [(&'static str, bool)] {
        match self {
            Action::Custom => &[
                ("event_name", true),
                ("context_kind", false),
                ("user_key", true),
                ("additional_context_keys", false),
                ("metric_value", false),
                ("event_properties", false),
                ("timestamp", false),
            ],
            Action::Alias => &[
                ("user_key", true),
                ("previous_key", true),
                ("timestamp", false),
            ],
        }
    }
}

/// Where a field's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// `$.a.b`: that member of the call.
    Path(Vec<String>),
    /// A list: the first entry present and not null; an empty string is
    /// passed over too, except where the field reads it as "no value"
    /// ([`Field::resolve`]).
    FirstOf(Vec<Field>),
    /// A table: an object of the members that resolve.
    Object(Vec<(String, Field)>),
    /// Anything else, sent as written.
    Literal(Value),
}

impl Field {
    fn read(value: &Value, key: &'static str, nested: bool) -> Result<Field, SpecError> {
        match value {
            Value::String(text) if text == "$" || text.starts_with("$.") => {
                let names: Vec<String> = text[1..].split('.').skip(1).map(str::to_owned).collect();
                if names.is_empty() || names.iter().any(String::is_empty) {
                    return Err(spec_error(
                        key,
                        format!("{text:?} is not a path: write $.name or $.a.b"),
                    ));
                }
                Ok(Field::Path(names))
            }
            Value::Array(entries) if nested => Err(spec_error(
                key,
                format!("a list inside a list or table is not supported ({value})"),
            )),
            Value::Array(entries) if entries.is_empty() => {
                Err(spec_error(key, "an empty list has no value to take"))
            }
            Value::Array(entries) => Ok(Field::FirstOf(
                entries
                    .iter()
                    .map(|entry| Field::read(entry, key, true))
                    .collect::<Result<_, _>>()?,
            )),
            Value::Object(members) => Ok(Field::Object(
                members
                    .iter()
                    .map(|(name, value)| Ok((name.clone(), Field::read(value, key, true)?)))
                    .collect::<Result<_, SpecError>>()?,
            )),
            literal => Ok(Field::Literal(literal.clone())),
        }
    }

    /// The field's value in `call`; `None` when it has none (absent,
    /// null, or an empty string when `empty_is_absent`). A list passes
    /// over absent and null entries, and empty strings when
    /// `empty_is_absent`; otherwise an empty string is its value (Segment
    /// then strips it, e.g. an empty revenue is no metric).
    pub fn resolve<'a>(&'a self, call: &'a Value, empty_is_absent: bool) -> Option<Cow<'a, Value>> {
        self.pick(call, empty_is_absent).map(|(_, value)| value)
    }

    /// As [`Field::resolve`], with the entry of a list that gave the value
    /// (the field itself otherwise), for reasons that name the path read.
    pub fn pick<'a>(
        &'a self,
        call: &'a Value,
        empty_is_absent: bool,
    ) -> Option<(&'a Field, Cow<'a, Value>)> {
        let present = |value: &Value| match value {
            Value::Null => false,
            Value::String(text) => !(empty_is_absent && text.is_empty()),
            _ => true,
        };
        let value = match self {
            Field::Path(names) => names
                .iter()
                .try_fold(call, |value, name| value.get(name))
                .filter(|value| present(value))
                .map(Cow::Borrowed),
            Field::Literal(value) => present(value).then_some(Cow::Borrowed(value)),
            Field::FirstOf(entries) => {
                return entries
                    .iter()
                    .find_map(|entry| entry.pick(call, empty_is_absent))
            }
            Field::Object(members) => {
                let object: Map<String, Value> = members
                    .iter()
                    .filter_map(|(name, field)| {
                        let value = field.resolve(call, empty_is_absent)?;
                        Some((name.clone(), value.into_owned()))
                    })
                    .collect();
                Some(Cow::Owned(Value::Object(object)))
            }
        };
        value.map(|value| (self, value))
    }

    /// How the field reads in a skip reason: `$.a.b`, a list of those, or
    /// the literal.
    pub fn describe(&self) -> String {
        match self {
            Field::Path(names) => format!("$.{}", names.join(".")),
            Field::FirstOf(entries) => {
                let entries: Vec<String> = entries.iter().map(Field::describe).collect();
                format!("[{}]", entries.join(", "))
            }
            Field::Object(_) => "a table".to_owned(),
            Field::Literal(value) => value.to_string(),
        }
    }
}

/// One usable mapping: its action, trigger and fields, its place in the
/// source's list and its text's short hash.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub action: Action,
    pub trigger: Trigger,
    /// 1-based position among the source's `[[segment_source.mapping]]`;
    /// 0 for a default mapping.
    pub index: usize,
    /// The spec with every default filled in (JSON).
    pub text: String,
    /// First 7 hex digits of SHA-1 of `text`.
    pub hash: String,
    pub event_name: Field,
    pub context_kind: Field,
    pub user_key: Field,
    pub additional_context_keys: Vec<(String, Field)>,
    pub metric_value: Field,
    pub event_properties: Field,
    pub previous_key: Field,
    pub timestamp: Field,
}

impl PartialEq for Mapping {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index && self.text == other.text
    }
}

impl Eq for Mapping {}

/// Segment's destination defaults, field by field.
fn default_field(name: &str) -> Value {
    let value = match name {
        "event_name" => r#""$.event""#,
        "context_kind" => r#""user""#,
        "user_key" => r#"["$.userId", "$.anonymousId"]"#,
        "additional_context_keys" => r#"{"unauthenticatedUser": "$.anonymousId"}"#,
        "metric_value" => r#"["$.properties.revenue", "$.properties.value"]"#,
        "event_properties" => r#""$.properties""#,
        "timestamp" => r#""$.timestamp""#,
        _ => "null",
    };
    serde_json::from_str(value).expect("the defaults are JSON")
}

/// The alias action's user key is the userId alone, and its previous key
/// the previousId, else the anonymousId.
fn default_alias_field(name: &str) -> Value {
    match name {
        "user_key" => Value::from("$.userId"),
        "previous_key" => serde_json::json!(["$.previousId", "$.anonymousId"]),
        other => default_field(other),
    }
}

impl MappingSpec {
    fn set_field(&mut self, name: &str, value: Value) {
        let slot = match name {
            "event_name" => &mut self.event_name,
            "context_kind" => &mut self.context_kind,
            "user_key" => &mut self.user_key,
            "additional_context_keys" => &mut self.additional_context_keys,
            "metric_value" => &mut self.metric_value,
            "event_properties" => &mut self.event_properties,
            "previous_key" => &mut self.previous_key,
            _ => &mut self.timestamp,
        };
        *slot = Some(value);
    }

    /// The value written for the field `name`, if any.
    fn field(&self, name: &str) -> Option<&Value> {
        match name {
            "event_name" => self.event_name.as_ref(),
            "context_kind" => self.context_kind.as_ref(),
            "user_key" => self.user_key.as_ref(),
            "additional_context_keys" => self.additional_context_keys.as_ref(),
            "metric_value" => self.metric_value.as_ref(),
            "event_properties" => self.event_properties.as_ref(),
            "previous_key" => self.previous_key.as_ref(),
            "timestamp" => self.timestamp.as_ref(),
            _ => None,
        }
    }
}

/// Every field either action has.
const FIELD_NAMES: [&str; 8] = [
    "event_name",
    "context_kind",
    "user_key",
    "additional_context_keys",
    "metric_value",
    "event_properties",
    "previous_key",
    "timestamp",
];

impl Mapping {
    /// Reads `spec`, the `index`th mapping of its source (0: a default).
    /// `None` when it is turned off (`enabled = false`).
    pub fn from_spec(spec: &MappingSpec, index: usize) -> Result<Option<Mapping>, SpecError> {
        let action = match spec.action.as_str() {
            "custom" | "trackEvent" => Action::Custom,
            "alias" | "aliasUser" => Action::Alias,
            other => {
                return Err(spec_error(
                    "action",
                    format!("unknown action {other:?}: write \"custom\" (Segment's trackEvent) or \"alias\" (aliasUser)"),
                ))
            }
        };
        let own: Vec<&str> = action.fields().iter().map(|(name, _)| *name).collect();
        if let Some(name) = FIELD_NAMES
            .into_iter()
            .find(|name| spec.field(name).is_some() && !own.contains(name))
        {
            return Err(spec_error(
                name,
                format!(
                    "the {} action has no field {name} (its fields: {})",
                    action.name(),
                    own.join(", ")
                ),
            ));
        }
        let trigger_text = spec
            .trigger
            .clone()
            .unwrap_or_else(|| action.default_trigger().to_owned());
        let trigger: Trigger =
            trigger_text
                .parse()
                .map_err(|error: super::trigger::TriggerError| SpecError {
                    key: "trigger",
                    message: format!("invalid trigger: {error}"),
                    offset: Some(error.offset),
                })?;
        // The spec with every default filled in: the mapping's text.
        let mut filled = MappingSpec {
            action: action.name().to_owned(),
            trigger: Some(trigger_text),
            ..MappingSpec::default()
        };
        let mut fields = Vec::new();
        for name in FIELD_NAMES {
            let value = match (spec.field(name), action) {
                (Some(value), _) => value.clone(),
                (None, _) if !own.contains(&name) => continue,
                (None, Action::Custom) => default_field(name),
                (None, Action::Alias) => default_alias_field(name),
            };
            let field = Field::read(&value, name, false)?;
            if matches!(name, "event_name" | "context_kind") {
                if let Field::Literal(literal) = &field {
                    if !matches!(literal, Value::String(text) if !text.is_empty()) {
                        return Err(spec_error(
                            name,
                            format!("{literal} is neither a path ($.a.b) nor a non-empty string"),
                        ));
                    }
                }
            }
            fields.push((name, field));
            filled.set_field(name, value);
        }
        let mut take = |name: &str| {
            fields
                .iter()
                .position(|(field, _)| *field == name)
                .map_or(Field::Literal(Value::Null), |i| fields.swap_remove(i).1)
        };
        let additional_context_keys = match take("additional_context_keys") {
            Field::Object(members) => members,
            Field::Literal(Value::Null) => Vec::new(),
            other => {
                return Err(spec_error(
                    "additional_context_keys",
                    format!(
                        "{} is not a table of context kinds to keys (write {{ organization = \"$.context.groupId\" }})",
                        other.describe()
                    ),
                ))
            }
        };
        let text = serde_json::to_string(&filled).expect("a mapping spec serialises");
        let mapping = Mapping {
            action,
            trigger,
            index,
            event_name: take("event_name"),
            context_kind: take("context_kind"),
            user_key: take("user_key"),
            additional_context_keys,
            metric_value: take("metric_value"),
            event_properties: take("event_properties"),
            previous_key: take("previous_key"),
            timestamp: take("timestamp"),
            hash: short_hash(&text),
            text,
        };
        Ok((spec.enabled != Some(false)).then_some(mapping))
    }

    /// Whether the mapping takes `call`.
    pub fn takes(&self, call: &Value) -> bool {
        self.trigger.matches(call, Dialect::Segment)
    }

    /// "mapping 2 (custom, #1a2b3c4)", or "default custom mapping".
    pub fn label(&self) -> String {
        if self.index == 0 {
            format!("default {} mapping", self.action.name())
        } else {
            format!(
                "mapping {} ({}, #{})",
                self.index,
                self.action.name(),
                self.hash
            )
        }
    }

    /// The mapping as it is applied, every default filled in.
    pub fn spec(&self) -> MappingSpec {
        serde_json::from_str(&self.text).expect("a mapping's text is its spec")
    }
}

/// First 7 hex digits of SHA-1 of `text`, as a mapping's short id.
pub fn short_hash(text: &str) -> String {
    Sha1::digest(text.as_bytes())
        .iter()
        .take(4)
        .map(|byte| format!("{byte:02x}"))
        .collect::<String>()[..7]
        .to_owned()
}

/// A source's mappings: the configured ones, or Segment's defaults (one
/// custom and one alias mapping) when it configures none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mappings {
    list: Vec<Mapping>,
    configured: bool,
}

impl Default for Mappings {
    fn default() -> Self {
        let spec = |action: &str| MappingSpec {
            action: action.to_owned(),
            ..MappingSpec::default()
        };
        let list = [spec("custom"), spec("alias")]
            .iter()
            .map(|spec| {
                Mapping::from_spec(spec, 0)
                    .expect("the default mappings are valid")
                    .expect("and on")
            })
            .collect();
        Mappings {
            list,
            configured: false,
        }
    }
}

impl Mappings {
    /// The configured mappings, in order (1-based indexes); an empty list
    /// gives the defaults. Errors name the mapping's index (0-based, as
    /// in the file's order) and the key.
    pub fn from_specs(specs: &[MappingSpec]) -> Result<Mappings, (usize, SpecError)> {
        if specs.is_empty() {
            return Ok(Mappings::default());
        }
        let mut list = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            if let Some(mapping) = Mapping::from_spec(spec, i + 1).map_err(|error| (i, error))? {
                list.push(mapping);
            }
        }
        Ok(Mappings {
            list,
            configured: true,
        })
    }

    /// Whether these are the source's own mappings (not the defaults).
    pub fn configured(&self) -> bool {
        self.configured
    }

    pub fn iter(&self) -> impl Iterator<Item = &Mapping> {
        self.list.iter()
    }

    /// What a batch stores to map its events the same way on every
    /// attempt: `default`, or the JSON list of every mapping's index and
    /// text (turned-off mappings left out).
    pub fn definition(&self) -> String {
        if !self.configured {
            return "default".to_owned();
        }
        let entries: Vec<Value> = self
            .list
            .iter()
            .map(|mapping| {
                serde_json::json!({
                    "index": mapping.index,
                    "spec": serde_json::from_str::<Value>(&mapping.text).expect("a mapping's text is JSON"),
                })
            })
            .collect();
        Value::Array(entries).to_string()
    }

    /// Reads back what [`Mappings::definition`] wrote.
    pub fn from_definition(definition: &str) -> Result<Mappings, String> {
        if definition == "default" {
            return Ok(Mappings::default());
        }
        #[derive(Deserialize)]
        struct Entry {
            index: usize,
            spec: MappingSpec,
        }
        let entries: Vec<Entry> = serde_json::from_str(definition)
            .map_err(|error| format!("stored mappings: {error}"))?;
        let mut list = Vec::new();
        for entry in entries {
            let mapping = Mapping::from_spec(&entry.spec, entry.index)
                .map_err(|error| format!("stored mapping {}: {error}", entry.index))?;
            list.extend(mapping);
        }
        Ok(Mappings {
            list,
            configured: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: Value) -> MappingSpec {
        serde_json::from_value(value).expect("a spec")
    }

    #[test]
    fn defaults_are_segments_destination_defaults() {
        let defaults = Mappings::default();
        let texts: Vec<&str> = defaults.iter().map(|m| m.trigger.text()).collect();
        assert_eq!(
            texts,
            [
                r#"type = "track""#,
                r#"type = "identify" or type = "alias""#
            ]
        );
        assert!(!defaults.configured());
        assert_eq!(defaults.definition(), "default");
        assert_eq!(
            defaults.iter().next().unwrap().label(),
            "default custom mapping"
        );
    }

    #[test]
    fn a_mapping_with_every_default_written_out_is_the_default_mapping() {
        let written = spec(json!({
            "action": "custom", "trigger": "type = \"track\"", "event_name": "$.event",
            "context_kind": "user", "user_key": ["$.userId", "$.anonymousId"],
            "additional_context_keys": {"unauthenticatedUser": "$.anonymousId"},
            "metric_value": ["$.properties.revenue", "$.properties.value"],
            "event_properties": "$.properties", "timestamp": "$.timestamp",
        }));
        let mapping = Mapping::from_spec(&written, 1).unwrap().unwrap();
        let default = Mappings::default().list.remove(0);
        assert_eq!(mapping.text, default.text);
        assert_eq!(mapping.hash, default.hash);
    }

    #[test]
    fn the_definition_reads_back_to_the_same_mappings() {
        let mappings = Mappings::from_specs(&[
            spec(json!({"action": "custom", "event_name": "purchase", "trigger": "event = \"Order Completed\""})),
            spec(json!({"action": "alias", "enabled": false})),
            spec(json!({"action": "alias", "user_key": ["$.userId"]})),
        ])
        .unwrap();
        let indexes: Vec<usize> = mappings.iter().map(|m| m.index).collect();
        assert_eq!(indexes, [1, 3], "the turned-off mapping is left out");
        let again = Mappings::from_definition(&mappings.definition()).unwrap();
        assert_eq!(again, mappings);
        assert_eq!(
            again.iter().next().unwrap().label(),
            format!(
                "mapping 1 (custom, #{})",
                mappings.iter().next().unwrap().hash
            )
        );
    }

    #[test]
    fn mistakes_name_the_key() {
        let error = |value: Value| Mappings::from_specs(&[spec(value)]).unwrap_err().1;
        assert_eq!(error(json!({"action": "identify"})).key, "action");
        let trigger = error(json!({"action": "custom", "trigger": "type = "}));
        assert_eq!((trigger.key, trigger.offset), ("trigger", Some(6)));
        assert_eq!(
            error(json!({"action": "alias", "event_name": "x"})).key,
            "event_name"
        );
        assert_eq!(
            error(json!({"action": "custom", "user_key": "$."})).key,
            "user_key"
        );
        assert_eq!(
            error(json!({"action": "custom", "user_key": []})).key,
            "user_key"
        );
        assert_eq!(
            error(json!({"action": "custom", "event_name": 5})).key,
            "event_name"
        );
        assert_eq!(
            error(json!({"action": "custom", "additional_context_keys": "$.context"})).key,
            "additional_context_keys"
        );
        assert_eq!(
            error(json!({"action": "custom", "metric_value": [["$.a"]]})).key,
            "metric_value"
        );
    }

    #[test]
    fn fields_resolve_paths_lists_tables_and_literals() {
        let call =
            json!({"userId": "", "anonymousId": "a", "properties": {"total": 5, "plan": null}});
        let field = |value: Value| Field::read(&value, "user_key", false).unwrap();
        let resolve =
            |value: Value, empty: bool| field(value).resolve(&call, empty).map(Cow::into_owned);
        assert_eq!(
            resolve(json!(["$.userId", "$.anonymousId"]), true),
            Some(json!("a"))
        );
        assert_eq!(
            resolve(json!(["$.userId", "$.anonymousId"]), false),
            Some(json!(""))
        );
        assert_eq!(resolve(json!("$.properties.total"), true), Some(json!(5)));
        assert_eq!(resolve(json!("$.properties.plan"), true), None);
        assert_eq!(resolve(json!("$.properties.total.x"), true), None);
        assert_eq!(resolve(json!("purchase"), true), Some(json!("purchase")));
        assert_eq!(
            resolve(
                json!({"t": "$.properties.total", "p": "$.properties.plan", "k": "web"}),
                true
            ),
            Some(json!({"t": 5, "k": "web"}))
        );
    }
}
