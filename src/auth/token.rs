//! The token rules of the README's "How tokens are checked" as pure functions: no I/O, the clock passed in. [`parse`] runs
//! checks 1–2 (shape and header); [`Parsed::check`] runs 3–10 against a key set, in order. No claim
//! is read before the signature has verified.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;

use super::keys::KeySet;
use crate::clerk::is_user_id;

/// The longest token accepted, in bytes (check 1, and the README's limits).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token was rejected. Each maps to one stable `code`, listed in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Check 1, 2, 5 (missing exp/iat) or 7, with a fixed description of what was wrong.
    Invalid(&'static str),
    InvalidAlgorithm,
    KidMismatch,
    InvalidSignature,
    Expired,
    NotActiveYet,
    IatInFuture,
    InvalidIssuer,
    InvalidAudience,
    InvalidAuthorizedParties,
    SessionPending,
}

impl TokenError {
    /// The machine-readable reason in the problem body.
    pub fn code(self) -> &'static str {
        match self {
            Self::Invalid(_) => "token-invalid",
            Self::InvalidAlgorithm => "token-invalid-algorithm",
            Self::KidMismatch => "jwk-kid-mismatch",
            Self::InvalidSignature => "token-invalid-signature",
            Self::Expired => "token-expired",
            Self::NotActiveYet => "token-not-active-yet",
            Self::IatInFuture => "token-iat-in-the-future",
            Self::InvalidIssuer => "token-invalid-issuer",
            Self::InvalidAudience => "token-invalid-audience",
            Self::InvalidAuthorizedParties => "token-invalid-authorized-parties",
            Self::SessionPending => "session-pending",
        }
    }

    /// A fixed, human-readable sentence: safe in `WWW-Authenticate` (no quotes or backslashes)
    /// and never echoing anything from the token.
    pub fn description(self) -> &'static str {
        match self {
            Self::Invalid(why) => why,
            Self::InvalidAlgorithm => "the token is not signed with RS256",
            Self::KidMismatch => "the token names a signing key that is not known",
            Self::InvalidSignature => "the token signature does not verify",
            Self::Expired => "the token has expired",
            Self::NotActiveYet => "the token is not valid yet (nbf)",
            Self::IatInFuture => "the token was issued in the future (iat)",
            Self::InvalidIssuer => "the token was issued by another issuer",
            Self::InvalidAudience => "the token audience is not accepted",
            Self::InvalidAuthorizedParties => {
                "the token was minted for an origin that is not authorized (azp)"
            }
            Self::SessionPending => "the session still has a pending task",
        }
    }
}

/// What a deployment accepts beyond the signature (the `CLERK_*` settings the checks read).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Without a trailing `/`.
    pub issuer: String,
    pub audience: Vec<String>,
    pub authorized_parties: Vec<String>,
    pub clock_skew_secs: u64,
    pub accept_pending: bool,
}

/// The active organization, from v2's `o` claim or v1's `org_*` claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub id: String,
    pub slug: Option<String>,
    pub role: Option<String>,
    pub permissions: Vec<String>,
}

/// The verified claims handlers may rely on.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// `sub`: the Clerk user id, `user_…`.
    pub user_id: String,
    /// `sid`: the Clerk session id.
    pub session_id: String,
    pub authorized_party: Option<String>,
    pub expires_at: f64,
    pub issued_at: f64,
    pub organization: Option<Organization>,
    /// `act`: present while someone impersonates the user.
    pub actor: Option<Value>,
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    alg: Option<Value>,
    #[serde(default)]
    typ: Option<Value>,
    #[serde(default)]
    kid: Option<Value>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

/// The payload as sent; read only after the signature verified. Known claims are typed loosely
/// so that a wrong type gives a precise rejection rather than a parse error; a claim repeated in
/// the JSON is a parse error (`token-invalid`).
#[derive(Deserialize)]
struct Payload {
    exp: Option<Value>,
    iat: Option<Value>,
    nbf: Option<Value>,
    iss: Option<Value>,
    sub: Option<Value>,
    sid: Option<Value>,
    aud: Option<Value>,
    azp: Option<Value>,
    sts: Option<Value>,
    act: Option<Value>,
    o: Option<Value>,
    org_id: Option<Value>,
    org_slug: Option<Value>,
    org_role: Option<Value>,
    org_permissions: Option<Value>,
}

/// A token that passed checks 1 and 2.
pub struct Parsed<'a> {
    kid: String,
    /// `header.payload`: what the signature covers.
    signed: &'a str,
    signature: &'a str,
    payload: Payload,
}

fn b64_json<T: for<'de> Deserialize<'de>>(part: &str, what: &'static str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Invalid(what))?;
    // A JSON array would deserialize into a struct too; a JOSE header and a claims set are objects.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(TokenError::Invalid(what));
    }
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Invalid(what))
}

/// Checks 1 and 2: three base64url parts of JSON, at most 8 KiB; an RS256 header with a `kid`.
pub fn parse(raw: &str) -> Result<Parsed<'_>, TokenError> {
    if raw.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Invalid("the token is longer than 8 KiB"));
    }
    let mut parts = raw.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Invalid(
            "the token is not three dot-separated parts",
        ));
    };
    // An empty signature is valid base64url; `alg` or the signature check rejects it below.
    if URL_SAFE_NO_PAD.decode(s).is_err() {
        return Err(TokenError::Invalid("the token signature is not base64url"));
    }
    let header: Header = b64_json(h, "the token header is not base64url JSON")?;
    let payload: Payload = b64_json(p, "the token payload is not base64url JSON")?;

    if header.alg.as_ref().and_then(Value::as_str) != Some("RS256") {
        return Err(TokenError::InvalidAlgorithm);
    }
    match &header.typ {
        None => {}
        Some(Value::String(t)) if t == "JWT" => {}
        Some(_) => return Err(TokenError::Invalid("the token type (typ) is not JWT")),
    }
    let kid = match header.kid {
        Some(Value::String(k)) if !k.is_empty() => k,
        _ => return Err(TokenError::Invalid("the token header has no key id (kid)")),
    };
    if header.crit.is_some() {
        return Err(TokenError::Invalid(
            "the token header has critical extensions (crit)",
        ));
    }
    Ok(Parsed {
        kid,
        signed: &raw[..h.len() + 1 + p.len()],
        signature: s,
        payload,
    })
}

fn number(v: &Option<Value>) -> Option<f64> {
    v.as_ref().and_then(Value::as_f64)
}

fn string(v: &Option<Value>) -> Option<&str> {
    v.as_ref().and_then(Value::as_str)
}

impl Parsed<'_> {
    /// The `kid` of the header, for logs and metrics.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Checks 3–10, in order, at `now` (seconds since the Unix epoch).
    pub fn check(self, keys: &KeySet, now: f64, policy: &Policy) -> Result<Claims, TokenError> {
        // 3. A known key; with a pinned key, that key whatever the kid says.
        let key: &DecodingKey = keys.get(&self.kid).ok_or(TokenError::KidMismatch)?;

        // 4. The signature. Nothing below runs on unverified data.
        match jsonwebtoken::crypto::verify(
            self.signature,
            self.signed.as_bytes(),
            key,
            Algorithm::RS256,
        ) {
            Ok(true) => {}
            _ => return Err(TokenError::InvalidSignature),
        }
        let p = self.payload;

        // 5. Time, with leeway.
        let skew = policy.clock_skew_secs as f64;
        let (Some(exp), Some(iat)) = (number(&p.exp), number(&p.iat)) else {
            return Err(TokenError::Invalid("the token lacks a numeric exp or iat"));
        };
        if exp <= now - skew {
            return Err(TokenError::Expired);
        }
        match &p.nbf {
            None => {}
            Some(v) => match v.as_f64() {
                Some(nbf) if nbf <= now + skew => {}
                Some(_) => return Err(TokenError::NotActiveYet),
                None => return Err(TokenError::Invalid("the token nbf is not a number")),
            },
        }
        if iat > now + skew {
            return Err(TokenError::IatInFuture);
        }

        // 6. The one issuer this deployment trusts.
        if string(&p.iss) != Some(policy.issuer.as_str()) {
            return Err(TokenError::InvalidIssuer);
        }

        // 7. A user's session token: not a machine token, not a JWT-template token, and a `sub`
        // that could be a Clerk user id (it reaches SQL and the Backend API's path).
        let user_id = match string(&p.sub) {
            Some(s) if is_user_id(s) => s.to_string(),
            _ => return Err(TokenError::Invalid("the token subject is not a user")),
        };
        let session_id = match string(&p.sid) {
            Some(s) if !s.is_empty() => s.to_string(),
            _ => return Err(TokenError::Invalid("the token has no session id (sid)")),
        };

        // 8. Audience: none unless configured, then one of the configured.
        match (&p.aud, policy.audience.is_empty()) {
            (None, true) => {}
            (Some(_), true) | (None, false) => return Err(TokenError::InvalidAudience),
            (Some(aud), false) => {
                let listed = |a: &str| policy.audience.iter().any(|x| x == a);
                let ok = match aud {
                    Value::String(a) => listed(a),
                    Value::Array(items) => items.iter().filter_map(Value::as_str).any(listed),
                    _ => false,
                };
                if !ok {
                    return Err(TokenError::InvalidAudience);
                }
            }
        }

        // 9. Authorized party, when configured.
        let azp = string(&p.azp).map(String::from);
        if !policy.authorized_parties.is_empty() {
            match &azp {
                Some(a) if policy.authorized_parties.iter().any(|x| x == a) => {}
                _ => return Err(TokenError::InvalidAuthorizedParties),
            }
        }

        // 10. A session with a pending task, unless accepted.
        if string(&p.sts) == Some("pending") && !policy.accept_pending {
            return Err(TokenError::SessionPending);
        }

        Ok(Claims {
            user_id,
            session_id,
            authorized_party: azp,
            expires_at: exp,
            issued_at: iat,
            organization: organization(&p),
            actor: p.act,
        })
    }
}

fn organization(p: &Payload) -> Option<Organization> {
    let split = |s: &str| {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    if let Some(Value::Object(o)) = &p.o {
        let id = o.get("id").and_then(Value::as_str)?;
        return Some(Organization {
            id: id.to_string(),
            slug: o.get("slg").and_then(Value::as_str).map(String::from),
            role: o.get("rol").and_then(Value::as_str).map(String::from),
            permissions: o
                .get("per")
                .and_then(Value::as_str)
                .map(split)
                .unwrap_or_default(),
        });
    }
    let id = string(&p.org_id)?;
    Some(Organization {
        id: id.to_string(),
        slug: string(&p.org_slug).map(String::from),
        role: string(&p.org_role).map(String::from),
        permissions: match &p.org_permissions {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            _ => Vec::new(),
        },
    })
}

/// Checks 1–10 in one call: what the fuzzer, the benchmarks and the unit tests drive.
pub fn verify(raw: &str, keys: &KeySet, now: f64, policy: &Policy) -> Result<Claims, TokenError> {
    parse(raw)?.check(keys, now, policy)
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::{
        encoding::AsDer,
        rand::SystemRandom,
        rsa::{KeyPair, KeySize},
        signature::{KeyPair as _, RSA_PKCS1_SHA256},
    };

    use super::*;

    const ISSUER: &str = "https://clerk.example.com";

    fn policy() -> Policy {
        Policy {
            issuer: ISSUER.into(),
            audience: vec![],
            authorized_parties: vec![],
            clock_skew_secs: 5,
            accept_pending: false,
        }
    }

    /// One key for the module: RSA key generation is slow in a debug build.
    static PAIR: std::sync::LazyLock<KeyPair> =
        std::sync::LazyLock::new(|| KeyPair::generate(KeySize::Rsa2048).unwrap());

    /// Rule 7 alone: a token that passes 1–6, signed by a pinned key, with this `sub` and `sid`.
    fn rule_7(sub: Value, sid: Value) -> Result<String, TokenError> {
        let pair = &*PAIR;
        let keys = KeySet::pinned(ISSUER, pair.public_key().as_der().unwrap().as_ref());
        let header = serde_json::json!({"alg": "RS256", "kid": "ins_1", "typ": "JWT"});
        let claims = serde_json::json!({
            "exp": 2e9, "iat": 1e9, "iss": ISSUER, "sub": sub, "sid": sid,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0; pair.public_modulus_len()];
        pair.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            input.as_bytes(),
            &mut sig,
        )
        .unwrap();
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig));
        verify(&token, &keys, 1.5e9, &policy()).map(|c| c.user_id)
    }

    #[test]
    fn rule_7_takes_only_a_clerk_user_id_with_a_session() {
        let sid = || Value::from("sess_2GbDB4enNdCa5vS1zpC3Xzg9tK9");
        assert_eq!(
            rule_7("user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr".into(), sid()).as_deref(),
            Ok("user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr")
        );
        let longest = format!("user_{}", "a-_Z9".repeat(24) + "abc");
        assert_eq!(rule_7(longest.clone().into(), sid()), Ok(longest));
        let not_a_user = Err(TokenError::Invalid("the token subject is not a user"));
        for sub in [
            Value::from("user_"),
            Value::from("user_\0x"),
            Value::from("user_a b"),
            Value::from("user_é"),
            Value::from("user_a/../b"),
            Value::from(format!("user_{}", "a".repeat(124))),
            Value::from("mch_2xhFjEI5X2qWRvtV13BzSj8H6Dk"),
            Value::from(42),
            Value::Null,
        ] {
            assert_eq!(rule_7(sub.clone(), sid()), not_a_user, "{sub}");
        }
        assert_eq!(
            rule_7("user_a".into(), Value::Null),
            Err(TokenError::Invalid("the token has no session id (sid)"))
        );
    }
}
