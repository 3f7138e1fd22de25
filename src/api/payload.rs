//! A JSON response body serialized with serde in one pass, and kept as bytes so that a body made
//! once can be served many times. poem-openapi's `Json` first builds a `serde_json::Value` tree of
//! the whole body (`ToJSON`) and then serializes that tree; on `GET /users/me`, the hot path, that
//! was about a tenth of the service's time. The OpenAPI document is the same: the schema is `T`'s.

use std::{marker::PhantomData, sync::OnceLock};

use bytes::Bytes;
use poem::{IntoResponse, Response};
use poem_openapi::{
    ApiResponse,
    payload::Payload,
    registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry},
    types::Type,
};

use super::error::ApiError;

const CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// The JSON of a `T`. Made only from a `T`, so the body is what the document says; `T`'s
/// `Serialize` must give what its `ToJSON` gives (a test per type checks it).
pub struct JsonBody<T> {
    bytes: Bytes,
    of: PhantomData<fn() -> T>,
}

impl<T: serde::Serialize> JsonBody<T> {
    pub fn encode(value: &T) -> Result<Self, ApiError> {
        // Room for a typical `User` (about 400 bytes) at once, not grown step by step.
        let mut body = Vec::with_capacity(1024);
        serde_json::to_writer(&mut body, value).map_err(|e| {
            ApiError::internal(format!("a response body could not be serialized: {e}"))
        })?;
        // A cached user keeps this body: not the spare room (20,000 users: 13 MiB).
        body.shrink_to_fit();
        Ok(Self {
            bytes: body.into(),
            of: PhantomData,
        })
    }

    /// The encoding of `value()`, made the first time and kept in `slot` for the next.
    pub fn encode_once(
        slot: &OnceLock<Bytes>,
        value: impl FnOnce() -> T,
    ) -> Result<Self, ApiError> {
        if let Some(bytes) = slot.get() {
            return Ok(Self {
                bytes: bytes.clone(),
                of: PhantomData,
            });
        }
        let body = Self::encode(&value())?;
        let _ = slot.set(body.bytes.clone());
        Ok(body)
    }
}

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = CONTENT_TYPE;

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T> IntoResponse for JsonBody<T> {
    fn into_response(self) -> Response {
        Response::builder()
            .content_type(CONTENT_TYPE)
            .body(self.bytes)
    }
}

impl<T: Type> ApiResponse for JsonBody<T> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: CONTENT_TYPE,
                    schema: T::schema_ref(),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_encoded_once_and_then_served_from_the_slot() {
        let slot = OnceLock::new();
        let first = JsonBody::encode_once(&slot, || vec![1, 2, 3]).unwrap();
        let again = JsonBody::<Vec<i32>>::encode_once(&slot, || unreachable!()).unwrap();
        assert_eq!(first.bytes, "[1,2,3]");
        assert_eq!(again.bytes, first.bytes);
    }
}
