//! The committed `openapi.json` is what the code serves: client generators read the file.

use serde_json::Value;

#[test]
fn the_committed_document_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let current: Value = serde_json::from_str(&clerk_users::api::openapi_service().spec()).unwrap();
    assert!(
        committed == current,
        "openapi.json is out of date: run `cargo run --bin clerk-users -- openapi > openapi.json`"
    );
}

#[test]
fn every_operation_has_an_id_a_tag_and_documented_errors() {
    let spec: Value = serde_json::from_str(&clerk_users::api::openapi_service().spec()).unwrap();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let here = format!("{method} {path}");
            assert!(op["operationId"].is_string(), "{here}: operationId");
            assert!(!op["tags"].as_array().unwrap().is_empty(), "{here}: tag");
            for (status, resp) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &resp["content"]["application/problem+json"]["schema"]["$ref"];
                    assert_eq!(schema, "#/components/schemas/Problem", "{here} {status}");
                    assert!(
                        !resp["description"].as_str().unwrap().is_empty(),
                        "{here} {status}"
                    );
                }
            }
        }
    }
    // No anonymous inline object schemas anywhere: every object is a named component.
    fn walk(v: &Value, at: &str) {
        match v {
            Value::Object(map) => {
                if map.get("type") == Some(&Value::from("object")) && map.contains_key("properties")
                {
                    assert!(
                        at.starts_with("/components/schemas/"),
                        "inline object schema at {at}"
                    );
                }
                for (k, child) in map {
                    walk(child, &format!("{at}/{k}"));
                }
            }
            Value::Array(items) => items
                .iter()
                .enumerate()
                .for_each(|(i, c)| walk(c, &format!("{at}/{i}"))),
            _ => {}
        }
    }
    walk(&spec, "");
}
