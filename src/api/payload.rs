//! A JSON response body serialized with serde in one pass, and kept as bytes so that a body made
//! once can be served many times. poem-openapi's `Json` first builds a `serde_json::Value` tree of
//! the whole body (`ToJSON`) and then serializes that tree; on `GET /users/me`, the hot path, that
//! was about a tenth of the service's time. The OpenAPI document is the same: the schema is `T`'s.

use std::{marker::PhantomData, sync::OnceLock};

use bytes::Bytes;
use poem::{
    IntoResponse, Response,
    http::{HeaderValue, header},
};
use poem_openapi::{
    ApiResponse,
    payload::Payload,
    registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
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
        // A static header value: `content_type(&str)` copies the string into a new one each time.
        Response::builder()
            .header(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))
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

/// A value that is always present and may be `null`: `required` and `nullable: true` in the
/// document (OpenAPI 3.0), where poem-openapi's `Option<T>` would say "may be absent" instead.
/// Strict generated clients (zod, pydantic, Kotlin, Swift) then expect exactly what is sent:
/// the key, with a value or `null`. Serialized as the `Option` it holds.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Nullable<T>(pub Option<T>);

impl<T> std::ops::Deref for Nullable<T> {
    type Target = Option<T>;

    fn deref(&self) -> &Option<T> {
        &self.0
    }
}

impl<T> From<Option<T>> for Nullable<T> {
    fn from(value: Option<T>) -> Self {
        Self(value)
    }
}

impl<T: PartialEq> PartialEq<Option<T>> for Nullable<T> {
    fn eq(&self, other: &Option<T>) -> bool {
        &self.0 == other
    }
}

impl<T: Type> Type for Nullable<T> {
    const IS_REQUIRED: bool = true;

    type RawValueType = T::RawValueType;

    type RawElementValueType = T::RawElementValueType;

    fn name() -> std::borrow::Cow<'static, str> {
        format!("nullable_{}", T::name()).into()
    }

    fn schema_ref() -> MetaSchemaRef {
        match T::schema_ref() {
            MetaSchemaRef::Inline(schema) => MetaSchemaRef::Inline(Box::new(MetaSchema {
                nullable: true,
                ..*schema
            })),
            // OpenAPI 3.0 ignores siblings of `$ref`: a nullable reference is an `allOf` of one.
            reference => MetaSchemaRef::Inline(Box::new(MetaSchema {
                nullable: true,
                all_of: vec![reference],
                ..MetaSchema::ANY
            })),
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        self.0.as_ref().and_then(Type::as_raw_value)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        match &self.0 {
            Some(value) => value.raw_element_iter(),
            None => Box::new(std::iter::empty()),
        }
    }
}

impl<T: ParseFromJSON> ParseFromJSON for Nullable<T> {
    fn parse_from_json(value: Option<serde_json::Value>) -> ParseResult<Self> {
        match value {
            // Required: the key must be there, if only with `null`.
            None => Err(ParseError::custom("a required key is missing")),
            Some(serde_json::Value::Null) => Ok(Self(None)),
            Some(value) => T::parse_from_json(Some(value))
                .map(|v| Self(Some(v)))
                .map_err(ParseError::propagate),
        }
    }
}

impl<T: ToJSON> ToJSON for Nullable<T> {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(
            self.0
                .as_ref()
                .and_then(ToJSON::to_json)
                .unwrap_or(serde_json::Value::Null),
        )
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
