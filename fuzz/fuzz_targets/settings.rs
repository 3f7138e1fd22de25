//! The settings parser (the README's "Settings"): `Settings::from_overrides` (the compiled-in
//! defaults, then the overrides, read as the binary reads its layers) with arbitrary values.
//! Input: lines of `key=value`; a key that is not a setting's name picks one of
//! `settings::keys()` by its bytes, so every line sets a real setting.
//!
//! Beyond "no panic": an error names a variable in upper case, and no secret appears in an
//! error or in the `Debug` output of valid settings (the secret key and the database password
//! carry a marker the harness looks for).
#![no_main]

use clerk_users::settings::{self, Settings};
use libfuzzer_sys::fuzz_target;

const MARK: &str = "ZQ9SECRETMARK";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).replace(MARK, "");
    let mut pairs: Vec<(String, String)> = vec![
        (
            "database_url".into(),
            format!("postgres://app:pw{MARK}@localhost:5432/app"),
        ),
        ("clerk_secret_key".into(), format!("sk_test_{MARK}")),
        ("clerk_issuer".into(), "https://clerk.example.com".into()),
    ];
    let keys = settings::keys();
    for line in text.split('\n') {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let key = match keys.iter().find(|k| **k == key) {
            Some(k) => *k,
            None => {
                let h = key
                    .bytes()
                    .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
                keys[h % keys.len()]
            }
        };
        let value = if key == "clerk_secret_key" {
            // Still a secret: keep the marker in it.
            format!("{value}{MARK}")
        } else {
            value.to_string()
        };
        pairs.push((key.to_string(), value));
    }
    let borrowed: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    match Settings::from_overrides(&borrowed) {
        Ok(settings) => {
            let debug = format!("{settings:?}");
            assert!(!debug.contains(MARK), "a secret in Debug output: {debug}");
        }
        Err(e) => {
            assert!(!e.variable.is_empty());
            assert_eq!(e.variable, e.variable.to_uppercase());
            let shown = e.to_string();
            assert!(!shown.contains(MARK), "a secret in an error: {shown}");
            assert!(!shown.contains('\n'), "one line: {shown}");
        }
    }
});
