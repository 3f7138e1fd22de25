//! JSON Merge Patch (RFC 7396), as a pure function over `serde_json::Value`.

use serde_json::Value;

/// Apply `patch` to `target`, as RFC 7396 §2 defines: an object patch merges key by key, `null`
/// removes a key, anything else replaces the target whole.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let Value::Object(map) = target else {
        unreachable!("made an object above")
    };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The examples of RFC 7396, Appendix A, as (original, patch, result) JSON texts: the unit test
/// below and the HTTP tests of `PATCH /users/me` both walk them.
pub const RFC7396_EXAMPLES: [(&str, &str, &str); 15] = [
    (r#"{"a":"b"}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
    (r#"{"a":"b"}"#, r#"{"b":"c"}"#, r#"{"a":"b","b":"c"}"#),
    (r#"{"a":"b"}"#, r#"{"a":null}"#, r#"{}"#),
    (r#"{"a":"b","b":"c"}"#, r#"{"a":null}"#, r#"{"b":"c"}"#),
    (r#"{"a":["b"]}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
    (r#"{"a":"c"}"#, r#"{"a":["b"]}"#, r#"{"a":["b"]}"#),
    (
        r#"{"a":{"b":"c"}}"#,
        r#"{"a":{"b":"d","c":null}}"#,
        r#"{"a":{"b":"d"}}"#,
    ),
    (r#"{"a":[{"b":"c"}]}"#, r#"{"a":[1]}"#, r#"{"a":[1]}"#),
    (r#"["a","b"]"#, r#"["c","d"]"#, r#"["c","d"]"#),
    (r#"{"a":"b"}"#, r#"["c"]"#, r#"["c"]"#),
    (r#"{"a":"foo"}"#, r#"null"#, r#"null"#),
    (r#"{"a":"foo"}"#, r#""bar""#, r#""bar""#),
    (r#"{"e":null}"#, r#"{"a":1}"#, r#"{"e":null,"a":1}"#),
    (r#"[1,2]"#, r#"{"a":"b","c":null}"#, r#"{"a":"b"}"#),
    (
        r#"{}"#,
        r#"{"a":{"bb":{"ccc":null}}}"#,
        r#"{"a":{"bb":{}}}"#,
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_of_rfc7396_appendix_a() {
        for (original, patch, result) in RFC7396_EXAMPLES {
            let mut target: Value = serde_json::from_str(original).unwrap();
            merge_patch(&mut target, &serde_json::from_str(patch).unwrap());
            assert_eq!(
                target,
                serde_json::from_str::<Value>(result).unwrap(),
                "{original} patched with {patch}"
            );
        }
    }
}
