//! Writes the seed corpus (`fuzz/seeds/<target>/`) from the Clerk stand-in: real session tokens as
//! clients send them, the same claims for the harness to sign, header maps that carry them, and
//! settings as a deployment writes them. Run from the repository root:
//! `cargo run --manifest-path fuzz/Cargo.toml --bin seeds`.

use std::{fs, path::Path};

use clerk_users::testkit::{ClerkStandIn, SigningKey};
use serde_json::{Value, json};

#[path = "fuzz_targets/common.rs"]
mod common;
use common::{ISSUER, KID, NOW};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("fuzz/seeds").join(target);
    fs::create_dir_all(&dir).expect("create the seed folder");
    fs::write(dir.join(name), bytes).expect("write a seed");
}

/// Claims as Clerk mints them, moved to the harness's clock.
fn at_now(mut claims: Value) -> Value {
    let now = NOW as i64;
    claims["iss"] = json!(ISSUER);
    claims["iat"] = json!(now - 5);
    claims["nbf"] = json!(now - 15);
    claims["exp"] = json!(now + 55);
    claims
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let clerk =
        ClerkStandIn::start_with_key("sk_test_fuzzseeds", SigningKey::generate_with_kid(KID)).await;
    let key = clerk.current_key();
    let header = ClerkStandIn::header_for(&key);
    let user = "user_2abcDEFghiJKLmnoPQRstuVWXyz";

    let base = at_now(clerk.claims_for(user));
    let mut variants = vec![("session", base.clone())];
    let mut org = base.clone();
    org["o"] =
        json!({"id": "org_2abc", "slg": "acme", "rol": "admin", "per": "manage,read", "fpm": "3"});
    variants.push(("org-v2", org));
    let mut org1 = base.clone();
    org1["org_id"] = json!("org_2abc");
    org1["org_role"] = json!("org:admin");
    org1["org_permissions"] = json!(["org:sys_memberships:read"]);
    variants.push(("org-v1", org1));
    let mut aud = base.clone();
    aud["aud"] = json!(["api", "other"]);
    aud["azp"] = json!("https://app.example.com");
    aud["sts"] = json!("pending");
    aud["act"] = json!({"sub": "user_admin", "iss": "https://dashboard.clerk.com"});
    variants.push(("aud-azp-pending-act", aud));

    for (name, claims) in &variants {
        // Mode 0: the token as a client sends it (its signature is the stand-in's key's).
        let token = clerk.sign_with(&key, &header, claims);
        write(
            "token",
            &format!("raw-{name}"),
            &[&[0u8][..], token.as_bytes()].concat(),
        );
        // Mode 1: header and claims for the harness to sign, under both policies.
        for (policy, mode) in [("p0", 1u8), ("p1", 3u8)] {
            let mut input = vec![mode];
            input.extend_from_slice(header.to_string().as_bytes());
            input.push(0xFF);
            input.extend_from_slice(claims.to_string().as_bytes());
            write("token", &format!("signed-{name}-{policy}"), &input);
        }
    }
    // A live token from the stand-in itself, as minted now (expired for the harness's clock).
    write(
        "token",
        "raw-live",
        &[&[0u8][..], clerk.token_for(user).as_bytes()].concat(),
    );

    let token = clerk.sign_with(&key, &header, &base);
    for (name, lines) in [
        ("bearer", format!("authorization:Bearer {token}")),
        ("bearer-lowercase", format!("authorization:bearer {token}")),
        (
            "cookie",
            format!("cookie:theme=dark; __session={token}; other=1"),
        ),
        ("cookie-quoted", format!("cookie:__session=\"{token}\"")),
        (
            "header-and-cookie",
            format!("cookie:__session=abc\nauthorization:Bearer {token}"),
        ),
        (
            "two-cookies",
            format!("cookie:a=1\ncookie:__session={token}"),
        ),
        ("basic", "authorization:Basic dXNlcjpwYXNz".to_string()),
    ] {
        write("extract", name, lines.as_bytes());
    }

    for (name, text) in [
        ("defaults", String::new()),
        (
            "deployment",
            format!(
                "clerk_jwks_url=https://api.clerk.com/v1/jwks\nclerk_api_url=https://api.clerk.com\n\
                 clerk_authorized_parties=https://app.example.com,https://admin.example.com\n\
                 clerk_audience=api\nclerk_clock_skew_secs=10\napi_env=production\n\
                 listen_addr=[::]:8080\nlog_format=pretty\nrust_log=info,clerk_users=debug\n\
                 cors_allowed_origins=https://app.example.com\nclerk_breaker_failures=3\n\
                 clerk_breaker_cooldown_ms=2500\nclerk_jwt_key={}",
                key.public_pem().replace('\n', "\\n")
            ),
        ),
        (
            "webhook-and-db",
            "clerk_webhook_secret=whsec_ZmFrZS1zZWNyZXQtZm9yLWZ1enppbmc=\n\
             database_url=postgres://u:p@db.internal:5432/app?sslmode=require&connect_timeout=3\n\
             db_pool_max_size=64\nrequest_timeout_ms=2500\nclerk_jwks_refresh_secs=60\n\
             clerk_jwks_max_stale_secs=3600"
                .to_string(),
        ),
        (
            "loopback",
            "clerk_issuer=http://127.0.0.1:3000/\nclerk_api_url=http://[::1]:3001\n\
             clerk_jwks_url=http://localhost:3000/.well-known/jwks.json"
                .to_string(),
        ),
    ] {
        write("settings", name, text.as_bytes());
    }
    println!("seeds written to fuzz/seeds/");
}
