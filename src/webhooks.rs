//! Clerk webhooks (README, "Webhooks"), delivered by Svix: signature and timestamp checks as a pure
//! function, and the event shapes the service acts on.

use aws_lc_rs::hmac;
use base64::{Engine, engine::general_purpose::STANDARD};
use serde::Deserialize;

use crate::clerk::{ClerkUser, is_user_id, text, time_of_millis};

/// How far a delivery's timestamp may be from now, either way.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// The longest `svix-id` taken. Svix's are `msg_` and 27 characters; a longer one is not Svix's.
pub const MAX_SVIX_ID_BYTES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("missing svix-id, svix-timestamp or svix-signature header")]
    MissingHeaders,
    #[error("the svix-timestamp is not within 5 minutes of now")]
    StaleTimestamp,
    #[error("no signature in svix-signature matches")]
    BadSignature,
    #[error("the body is not a Clerk event of the expected shape")]
    BadBody,
}

impl WebhookError {
    pub fn code(self) -> &'static str {
        match self {
            Self::MissingHeaders => "webhook-headers-missing",
            Self::StaleTimestamp => "webhook-timestamp-stale",
            Self::BadSignature => "webhook-signature-invalid",
            Self::BadBody => "webhook-body-invalid",
        }
    }
}

/// Checks Svix signatures with the secret of `CLERK_WEBHOOK_SECRET`.
pub struct SvixVerifier {
    key: hmac::Key,
}

impl SvixVerifier {
    /// From `whsec_<base64>`; `None` when the secret is not of that form (settings reject it).
    pub fn new(secret: &str) -> Option<Self> {
        let raw = STANDARD.decode(secret.strip_prefix("whsec_")?).ok()?;
        Some(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &raw),
        })
    }

    /// The signature Svix puts in a `v1,<base64>` entry for this delivery.
    pub fn sign(&self, id: &str, timestamp: &str, body: &[u8]) -> String {
        let tag = hmac::sign(&self.key, &signed_content(id, timestamp, body));
        STANDARD.encode(tag.as_ref())
    }

    /// Signed content `{id}.{timestamp}.{body}`; any `v1,` entry may match (compared in constant
    /// time); the timestamp within [`TOLERANCE_SECS`] of `now`.
    pub fn verify(
        &self,
        id: &str,
        timestamp: &str,
        signatures: &str,
        body: &[u8],
        now: i64,
    ) -> Result<(), WebhookError> {
        if id.is_empty() || timestamp.is_empty() || signatures.is_empty() {
            return Err(WebhookError::MissingHeaders);
        }
        // Svix ids are `msg_` and 27 characters; the id is stored (a primary key), so it is bounded.
        if id.len() > MAX_SVIX_ID_BYTES {
            return Err(WebhookError::BadSignature);
        }
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| WebhookError::StaleTimestamp)?;
        if (now - ts).abs() > TOLERANCE_SECS {
            return Err(WebhookError::StaleTimestamp);
        }
        let content = signed_content(id, timestamp, body);
        let matched = signatures
            .split(' ')
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|b64| STANDARD.decode(b64).ok())
            .any(|sig| hmac::verify(&self.key, &content, &sig).is_ok());
        if matched {
            Ok(())
        } else {
            Err(WebhookError::BadSignature)
        }
    }
}

/// Whether Unix milliseconds name a moment the service can store.
fn representable(ms: i64) -> bool {
    time_of_millis(ms).is_some()
}

fn signed_content(id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// What a verified delivery asks of the service.
#[derive(Debug)]
pub enum Action {
    /// `user.created`, `user.updated`: store this version unless a newer one is stored.
    Upsert(Box<ClerkUser>),
    /// `user.deleted`: remove the record; `at` is the event's time (Unix ms).
    Delete { clerk_id: String, at: i64 },
    /// Any other event type: acknowledged, ignored.
    Ignore,
}

/// Parse a Clerk event body.
pub fn parse_event(body: &[u8]) -> Result<(String, Action), WebhookError> {
    #[derive(Deserialize)]
    struct Event {
        /// Stored with the Svix id, so read as Clerk's text is (without U+0000).
        #[serde(rename = "type", deserialize_with = "text::string")]
        kind: String,
        data: serde_json::Value,
        timestamp: Option<i64>,
    }
    #[derive(Deserialize)]
    struct Deleted {
        id: String,
    }
    let event: Event = serde_json::from_slice(body).map_err(|_| WebhookError::BadBody)?;
    let action = match event.kind.as_str() {
        "user.created" | "user.updated" => {
            let user: ClerkUser =
                serde_json::from_value(event.data).map_err(|_| WebhookError::BadBody)?;
            // `updated_at` decides which version is newer: without a storable one, no version.
            // (A `created_at` out of range is stored as unknown, as at first sight.)
            if !is_user_id(&user.id) || !representable(user.updated_at) {
                return Err(WebhookError::BadBody);
            }
            Action::Upsert(Box::new(user))
        }
        "user.deleted" => {
            let d: Deleted =
                serde_json::from_value(event.data).map_err(|_| WebhookError::BadBody)?;
            let at = event
                .timestamp
                .filter(|&at| representable(at))
                .ok_or(WebhookError::BadBody)?;
            if !is_user_id(&d.id) {
                return Err(WebhookError::BadBody);
            }
            Action::Delete { clerk_id: d.id, at }
        }
        _ => Action::Ignore,
    };
    Ok((event.kind, action))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of Svix's documentation: secret, id, timestamp, body and signature.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: &str = "1614265330";
    const BODY: &str = r#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn svix_reference_vector() {
        let v = SvixVerifier::new(SECRET).unwrap();
        assert_eq!(format!("v1,{}", v.sign(ID, TS, BODY.as_bytes())), SIG);
        let now = TS.parse::<i64>().unwrap();
        assert_eq!(v.verify(ID, TS, SIG, BODY.as_bytes(), now), Ok(()));
        let several = format!("v1,bm9wZQ== {SIG} v2,whatever");
        assert_eq!(
            v.verify(ID, TS, &several, BODY.as_bytes(), now + 299),
            Ok(())
        );
        assert_eq!(
            v.verify(ID, TS, SIG, b"{}", now),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            v.verify("msg_other", TS, SIG, BODY.as_bytes(), now),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            v.verify(ID, TS, SIG, BODY.as_bytes(), now + 301),
            Err(WebhookError::StaleTimestamp)
        );
        assert_eq!(
            v.verify(ID, TS, SIG, BODY.as_bytes(), now - 301),
            Err(WebhookError::StaleTimestamp)
        );
        assert_eq!(
            v.verify(ID, "", SIG, BODY.as_bytes(), now),
            Err(WebhookError::MissingHeaders)
        );
    }
}
