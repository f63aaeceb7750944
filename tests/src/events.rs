//! The shapes of tether's output events, as `docs/events.md` documents them: scenarios
//! check what tether really printed against that page, so the page cannot drift.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::Value;

const PAGE: &str = include_str!("../../docs/events.md");

/// The documented example of each event, by name: every ```json block of the page.
pub fn documented() -> &'static BTreeMap<String, Value> {
    static EXAMPLES: OnceLock<BTreeMap<String, Value>> = OnceLock::new();
    EXAMPLES.get_or_init(|| {
        PAGE.split("```json")
            .skip(1)
            .filter_map(|block| block.split("```").next())
            .map(|json| {
                let value: Value = serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("docs/events.md has bad JSON ({e}): {json}"));
                let name = value["event"]
                    .as_str()
                    .unwrap_or_else(|| panic!("an example without an event name: {json}"))
                    .to_owned();
                (name, value)
            })
            .collect()
    })
}

/// Panics unless `event` has the shape docs/events.md gives its kind.
pub fn assert_documented(event: &Value) {
    let name = event["event"]
        .as_str()
        .unwrap_or_else(|| panic!("not an event: {event}"));
    let example = documented()
        .get(name)
        .unwrap_or_else(|| panic!("docs/events.md does not document {name:?}: {event}"));
    if let Err(difference) = same_shape(example, event) {
        panic!("{name} differs from docs/events.md: {difference}\nprinted: {event}");
    }
}

/// Every line of `stdout` as an event, each checked against the page.
pub fn parse_all(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON event per line ({e}): {stdout}"));
            assert_documented(&event);
            event
        })
        .collect()
}

/// Whether two JSON values have the same shape: the same keys with values of the same
/// kind, recursively (the first element of arrays stands for all). `null` on either side
/// stands for an optional value (absent in direct mode, say), which matches any kind.
/// Says where they differ.
pub fn same_shape(expected: &Value, actual: &Value) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let (ek, ak): (Vec<_>, Vec<_>) = (e.keys().collect(), a.keys().collect());
            if ek != ak {
                return Err(format!("keys {ak:?}, documented {ek:?}"));
            }
            e.iter()
                .try_for_each(|(k, v)| same_shape(v, &a[k]).map_err(|d| format!("{k}: {d}")))
        }
        (Value::Array(e), Value::Array(a)) => match (e.first(), a.first()) {
            (Some(e), Some(a)) => same_shape(e, a),
            _ => Ok(()),
        },
        (Value::Null, _) | (_, Value::Null) => Ok(()),
        (e, a) if std::mem::discriminant(e) == std::mem::discriminant(a) => Ok(()),
        (e, a) => Err(format!("{a} where the page has {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_compare_keys_and_kinds() {
        let doc: Value = serde_json::json!({"event": "x", "a": 1, "b": null, "c": ["s"]});
        assert!(
            same_shape(
                &doc,
                &serde_json::json!({"event": "y", "a": 2, "b": "v", "c": []})
            )
            .is_ok()
        );
        assert!(
            same_shape(
                &doc,
                &serde_json::json!({"event": "y", "a": "2", "b": 1, "c": []})
            )
            .is_err()
        );
        assert!(same_shape(&doc, &serde_json::json!({"event": "y", "a": 2, "c": []})).is_err());
        assert!(!documented().is_empty());
    }
}
