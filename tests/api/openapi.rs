//! The committed `openapi.json` is what the code serves: client generators read the file.

use serde_json::Value;

#[test]
fn the_committed_document_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let current: Value = serde_json::from_str(clerk_users::api::document()).unwrap();
    assert!(
        committed == current,
        "openapi.json is out of date: run `cargo run --bin clerk-users -- openapi > openapi.json`"
    );
}

#[test]
fn every_operation_has_an_id_a_tag_and_documented_errors() {
    let spec: Value = serde_json::from_str(clerk_users::api::document()).unwrap();
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

#[test]
fn every_user_key_is_required_and_the_clerk_owned_ones_nullable() {
    let spec: Value = serde_json::from_str(clerk_users::api::document()).unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.0."));
    let user = &spec["components"]["schemas"]["User"];
    let props = user["properties"].as_object().unwrap();
    let required: Vec<&str> = user["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required.len(), props.len(), "{required:?}");
    for (key, schema) in props {
        assert!(required.contains(&key.as_str()), "{key} required");
        let nullable =
            ["email", "first_name", "last_name", "username", "image_url"].contains(&key.as_str());
        assert_eq!(schema["nullable"] == true, nullable, "{key}: {schema}");
    }
    // The Svix headers are required parameters, named as Svix sends them.
    let params = spec["paths"]["/webhooks/clerk"]["post"]["parameters"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["svix-id", "svix-timestamp", "svix-signature"]);
    assert!(
        params
            .iter()
            .all(|p| p["in"] == "header" && p["required"] == true)
    );
    // Links between the /users/me operations, for clients and schemathesis's stateful phase.
    let me = &spec["paths"]["/users/me"];
    assert_eq!(
        me["get"]["responses"]["200"]["links"]["deleteMe"]["operationId"],
        "deleteMe"
    );
    assert_eq!(
        me["delete"]["responses"]["204"]["links"]["getMe"]["operationId"],
        "getMe"
    );
    // Every response names X-Request-Id; 401s WWW-Authenticate; 503s Retry-After.
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for (status, resp) in op["responses"].as_object().unwrap() {
                let headers = &resp["headers"];
                let here = format!("{method} {path} {status}");
                assert_eq!(headers["X-Request-Id"]["required"], true, "{here}");
                match status.as_str() {
                    "401" => assert_eq!(headers["WWW-Authenticate"]["required"], true, "{here}"),
                    "503" => assert_eq!(headers["Retry-After"]["required"], true, "{here}"),
                    _ => {}
                }
            }
        }
    }
}

/// RFC 9110 §15.5.6: a method a path does not serve is 405, with `Allow` naming those it does,
/// as problem+json like every other error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_a_path_does_not_serve_is_405_with_allow() {
    let app = clerk_users::testkit::TestApp::spawn().await;
    let spec: Value = serde_json::from_str(clerk_users::api::document()).unwrap();
    let mut paths: Vec<(String, Vec<String>)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(p, ops)| {
            (
                p.clone(),
                ops.as_object().unwrap().keys().cloned().collect(),
            )
        })
        .collect();
    paths.push(("/openapi.json".into(), vec!["get".into()]));
    paths.push(("/docs".into(), vec!["get".into()]));
    for (path, declared) in paths {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"] {
            if declared.contains(&method.to_ascii_lowercase()) {
                continue;
            }
            let resp = app
                .http
                .request(method.parse().unwrap(), format!("{}{path}", app.url))
                .send()
                .await
                .unwrap();
            let here = format!("{method} {path}");
            let allow = resp
                .headers()
                .get("allow")
                .unwrap_or_else(|| panic!("{here}: no Allow"))
                .to_str()
                .unwrap()
                .to_string();
            let mut expected: Vec<String> =
                declared.iter().map(|m| m.to_ascii_uppercase()).collect();
            if declared.iter().any(|m| m == "get") {
                expected.insert(1, "HEAD".into());
            }
            let listed: Vec<String> = allow.split(", ").map(String::from).collect();
            assert_eq!(
                listed.iter().collect::<std::collections::BTreeSet<_>>(),
                expected.iter().collect::<std::collections::BTreeSet<_>>(),
                "{here}: Allow {allow}"
            );
            crate::helpers::problem(resp, 405, "method-not-allowed").await;
        }
    }
}
