//! The settings' own tests: defaults, every error naming its variable, no secret in `Debug`, and
//! the key list in step with `config/default.toml` and `.env.example`.

use std::time::Duration;

use super::*;

const BASE: &[(&str, &str)] = &[
    ("database_url", "postgres://app:hunter2@localhost:5432/app"),
    ("clerk_secret_key", "sk_test_abc"),
    ("clerk_issuer", "https://clerk.example.com/"),
];

fn with(extra: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let mut all = BASE.to_vec();
    all.extend_from_slice(extra);
    Settings::from_overrides(&all)
}

#[test]
fn defaults_apply_and_issuer_loses_its_trailing_slash() {
    let s = with(&[]).unwrap();
    assert_eq!(s.clerk.issuer, "https://clerk.example.com");
    assert_eq!(s.clerk.clock_skew_secs, 5);
    assert_eq!(s.clerk.breaker_failures, 5);
    assert_eq!(s.clerk.breaker_cooldown, Duration::from_secs(5));
    assert_eq!(s.listen_addr.port(), 8000);
    assert_eq!(
        s.clerk.api_rate_limit, 100,
        "an sk_test_ key: Clerk's development limit"
    );
    match &s.clerk.keys {
        KeySource::Jwks { url, send_secret } => {
            assert_eq!(
                url.as_str(),
                "https://clerk.example.com/.well-known/jwks.json"
            );
            assert!(!send_secret);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn missing_required_names_the_variable() {
    let e = Settings::from_overrides(&[
        ("clerk_secret_key", "sk_x"),
        ("clerk_issuer", "https://a.b"),
    ])
    .unwrap_err();
    assert_eq!(e.to_string(), "DATABASE_URL: required, not set");
}

#[test]
fn bad_values_name_their_variable() {
    for (k, v, var) in [
        ("clerk_clock_skew_secs", "61", "CLERK_CLOCK_SKEW_SECS"),
        ("clerk_clock_skew_secs", "five", "CLERK_CLOCK_SKEW_SECS"),
        ("clerk_issuer", "http://clerk.example.com", "CLERK_ISSUER"),
        ("clerk_api_url", "ftp://x", "CLERK_API_URL"),
        ("clerk_jwks_url", "http://10.0.0.1/jwks", "CLERK_JWKS_URL"),
        ("clerk_jwt_key", "not a key", "CLERK_JWT_KEY"),
        ("clerk_accept_pending", "maybe", "CLERK_ACCEPT_PENDING"),
        ("clerk_breaker_failures", "-1", "CLERK_BREAKER_FAILURES"),
        ("clerk_api_rate_limit", "0", "CLERK_API_RATE_LIMIT"),
        ("clerk_api_rate_limit", "lots", "CLERK_API_RATE_LIMIT"),
        ("clerk_breaker_failures", "many", "CLERK_BREAKER_FAILURES"),
        (
            "clerk_breaker_cooldown_ms",
            "50",
            "CLERK_BREAKER_COOLDOWN_MS",
        ),
        ("clerk_breaker_cooldown_ms", "", "CLERK_BREAKER_COOLDOWN_MS"),
        ("clerk_webhook_secret", "nope", "CLERK_WEBHOOK_SECRET"),
        ("clerk_secret_key", "pk_test_x", "CLERK_SECRET_KEY"),
        ("database_url", "mysql:// nope", "DATABASE_URL"),
        ("api_env", "staging", "API_ENV"),
        ("listen_addr", "8000", "LISTEN_ADDR"),
        ("log_format", "xml", "LOG_FORMAT"),
        (
            "cors_allowed_origins",
            "https://a.example/",
            "CORS_ALLOWED_ORIGINS",
        ),
    ] {
        let e = with(&[(k, v)]).unwrap_err();
        assert_eq!(e.variable, var, "{k}={v} gave {e}");
    }
}

#[test]
fn loopback_http_is_allowed() {
    for host in ["localhost", "127.0.0.1", "127.8.9.10", "[::1]"] {
        let s = with(&[("clerk_issuer", &format!("http://{host}:3000"))]).unwrap();
        assert!(s.clerk.issuer.starts_with("http://"));
    }
}

#[test]
fn secret_sent_only_to_the_api_origin() {
    let s = with(&[
        ("clerk_api_url", "http://127.0.0.1:9000"),
        ("clerk_jwks_url", "http://127.0.0.1:9000/v1/jwks"),
    ])
    .unwrap();
    assert!(matches!(
        s.clerk.keys,
        KeySource::Jwks {
            send_secret: true,
            ..
        }
    ));
    let s = with(&[
        ("clerk_api_url", "http://127.0.0.1:9000"),
        ("clerk_jwks_url", "http://127.0.0.1:9001/v1/jwks"),
    ])
    .unwrap();
    assert!(matches!(
        s.clerk.keys,
        KeySource::Jwks {
            send_secret: false,
            ..
        }
    ));
}

#[test]
fn debug_output_has_no_secret() {
    let s = with(&[("clerk_webhook_secret", "whsec_c2VjcmV0c2VjcmV0")]).unwrap();
    let out = format!("{s:?}");
    for secret in [
        "hunter2",
        "sk_test_abc",
        "whsec_c2VjcmV0c2VjcmV0",
        "c2VjcmV0c2VjcmV0",
    ] {
        assert!(!out.contains(secret), "{secret} printed in {out}");
    }
}

/// Every key is read from the environment, has a (possibly commented) line in
/// config/default.toml, and a (possibly commented) variable in .env.example; and neither file
/// names a key the service does not read.
#[test]
fn every_key_is_in_default_toml_and_env_example() {
    let env_example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example")).unwrap();
    let named = |text: &str, upper: bool| -> Vec<String> {
        text.lines()
            .map(|l| l.trim_start_matches('#').trim())
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
            .filter(|k| !k.is_empty() && k.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()))
            .filter(|k| k.chars().any(|c| c.is_ascii_alphabetic()))
            .filter(|k| upper == k.chars().all(|c| !c.is_ascii_lowercase()))
            .map(str::to_lowercase)
            .collect()
    };
    let in_toml = named(DEFAULT_TOML, false);
    let in_env = named(&env_example, true);
    for key in keys() {
        assert!(
            in_toml.iter().any(|k| k == key),
            "{key} missing from config/default.toml"
        );
        assert!(
            in_env.iter().any(|k| k == key),
            "{} missing from .env.example",
            key.to_uppercase()
        );
    }
    for key in &in_toml {
        assert!(
            keys().contains(&key.as_str()),
            "config/default.toml names {key}, which is not read"
        );
    }
    // .env.example also documents the variables of the local run and of compose.
    let others = ["dev_clerk_addr", "pg_bin", "postgres_password", "http_port"];
    for key in &in_env {
        assert!(
            keys().contains(&key.as_str()) || others.contains(&key.as_str()),
            ".env.example names {}, which nothing reads",
            key.to_uppercase()
        );
    }
}

#[test]
fn messages_are_exact() {
    for (k, v, shown) in [
        (
            "clerk_clock_skew_secs",
            "61",
            "CLERK_CLOCK_SKEW_SECS: must be between 0 and 60, got 61",
        ),
        (
            "clerk_api_max_attempts",
            "five",
            "CLERK_API_MAX_ATTEMPTS: not a whole number: \"five\"",
        ),
        (
            "clerk_breaker_cooldown_ms",
            " ",
            "CLERK_BREAKER_COOLDOWN_MS: required, not set",
        ),
        (
            "clerk_accept_pending",
            "Maybe",
            "CLERK_ACCEPT_PENDING: expected true or false, got \"maybe\"",
        ),
        (
            "clerk_jwks_max_stale_secs",
            "60",
            "CLERK_JWKS_MAX_STALE_SECS: must not be shorter than CLERK_JWKS_REFRESH_SECS",
        ),
        (
            "database_url",
            "postgres:///app",
            "DATABASE_URL: names no host",
        ),
    ] {
        let e = with(&[(k, v)]).unwrap_err();
        assert_eq!(e.to_string(), shown, "{k}={v}");
    }
}

#[test]
fn a_bad_value_of_any_key_is_named_by_that_key() {
    let mut named = 0;
    for key in keys() {
        // Lists take any text; every other kind refuses this.
        let Err(e) = with(&[(key, "\u{1}not a value")]) else {
            continue;
        };
        assert_eq!(e.variable, key.to_uppercase(), "{e}");
        named += 1;
    }
    assert!(named >= 30, "only {named} keys refused the value");
}

#[test]
fn keys_are_the_fields_that_are_keys() {
    let keys = keys();
    assert_eq!(keys.len(), 39, "{keys:?}");
    for section in ["database", "clerk", "caches", "keys"] {
        assert!(!keys.contains(&section), "{section} is a section");
    }
    for key in [
        "database_url",
        "clerk_jwt_key",
        "clerk_jwks_url",
        "shutdown_grace_secs",
    ] {
        assert!(keys.contains(&key), "{key} missing");
    }
}

#[test]
fn a_jwt_key_is_the_only_key_also_with_escaped_newlines() {
    let pem = crate::testkit::SigningKey::generate().public_pem();
    for value in [pem.clone(), pem.replace('\n', "\\n")] {
        let s = with(&[("clerk_jwt_key", &value)]).unwrap();
        assert!(matches!(&s.clerk.keys, KeySource::Pem { .. }), "{value}");
    }
}

#[test]
fn the_connect_timeout_goes_into_the_connection() {
    let direct = ("database_direct_url", "postgres://app@direct.example/app");
    let s = with(&[("db_connect_timeout_ms", "1500"), direct]).unwrap();
    let direct = s.database.direct_url.expect("set");
    for options in [&s.database.url, &direct] {
        let config = options.config.expose();
        assert_eq!(
            config.get_connect_timeout(),
            Some(&Duration::from_millis(1500))
        );
        assert_eq!(config.get_application_name(), Some("clerk-users"));
    }
}

#[test]
fn a_jwt_key_makes_the_jwks_url_unused() {
    let pem = crate::testkit::SigningKey::generate().public_pem();
    let s = with(&[("clerk_jwt_key", &pem), ("clerk_jwks_url", "ftp://unused")]).unwrap();
    assert!(matches!(&s.clerk.keys, KeySource::Pem { .. }));
}

#[test]
fn the_rate_limit_follows_the_key_unless_set() {
    let live = with(&[("clerk_secret_key", "sk_live_abc")]).unwrap();
    assert_eq!(live.clerk.api_rate_limit, 1000);
    let set = with(&[
        ("clerk_secret_key", "sk_live_abc"),
        ("clerk_api_rate_limit", "250"),
    ])
    .unwrap();
    assert_eq!(set.clerk.api_rate_limit, 250);
}
