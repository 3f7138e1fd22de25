//! The merged layers as one flat table of keys, read into the structs that declare them, naming
//! the key in every error.
//!
//! A field that is a key reads the key's value, or reads as unset when no layer sets it; any other
//! field is a section (a struct) and reads the same table again. So sections nest without
//! `#[serde(flatten)]`, which buffers the values first and so loses which key a bad one came from.

use figment::{
    Figment,
    value::{Dict, Value},
};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor,
};

use super::{SettingsError, keys, kinds};

/// The keys and values of every layer, later layers having won.
pub struct Table(Dict);

impl Table {
    pub fn from_layers(figment: &Figment) -> Result<Self, SettingsError> {
        figment.extract().map(Self).map_err(|e| {
            let key = e.path.last().map_or("settings", String::as_str);
            SettingsError::new(key, e.kind.to_string())
        })
    }

    /// The text of `key`, trimmed; `None` when unset or blank.
    pub fn text(&self, key: &str) -> Option<String> {
        self.0.get(key).and_then(|v| kinds::text(v).ok().flatten())
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.0.insert(key.into(), Value::from(value.into()));
    }

    pub fn read<T: DeserializeOwned>(&self) -> Result<T, SettingsError> {
        T::deserialize(Unheld(&self.0)).map_err(|e| match e {
            Error::Named(e) => e,
            Error::Unnamed(problem) => SettingsError::new("settings", problem),
        })
    }
}

/// A problem, named once the key it belongs to is known.
#[derive(Debug)]
enum Error {
    Unnamed(String),
    Named(SettingsError),
}

impl Error {
    fn named(self, key: &str) -> SettingsError {
        match self {
            Self::Named(e) => e,
            Self::Unnamed(problem) => SettingsError::new(key, problem),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unnamed(problem) => f.write_str(problem),
            Self::Named(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Self::Unnamed(msg.to_string())
    }
}

/// The table as a field without a value in it sees it: a section reads its keys from it, a key
/// reads as unset.
struct Unheld<'a>(&'a Dict);

impl<'de> Deserializer<'de> for Unheld<'_> {
    type Error = Error;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_map(Fields {
            table: self.0,
            fields: fields.iter(),
            key: "",
        })
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_none()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// A struct's fields, each with its value from the table.
struct Fields<'a> {
    table: &'a Dict,
    fields: std::slice::Iter<'static, &'static str>,
    key: &'static str,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(&key) = self.fields.next() else {
            return Ok(None);
        };
        self.key = key;
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let key = self.key;
        match self.table.get(key).filter(|_| keys().contains(&key)) {
            Some(value) => seed
                .deserialize(value)
                .map_err(|e| SettingsError::new(key, e.kind.to_string())),
            None => seed
                .deserialize(Unheld(self.table))
                .map_err(|e| e.named(key)),
        }
        .map_err(Error::Named)
    }
}

/// The serde names of `T`'s fields, without reading anything: a struct's deserializer names its
/// fields when it asks for a struct, which is all this deserializer answers.
pub fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Names<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Names<'_> {
        type Error = de::value::Error;

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("only the field names were wanted"))
        }

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    let mut names: &'static [&'static str] = &[];
    let _ = T::deserialize(Names(&mut names));
    names
}
