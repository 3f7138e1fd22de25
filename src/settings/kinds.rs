//! The kinds of value a key holds, each parsed from the key's text. `Kind::read` and
//! `Kind::optional` are what the section structs name in `deserialize_with`; a kind's error is the
//! problem alone, and the table reader puts the variable in front of it.

use std::{fmt, marker::PhantomData, str::FromStr, time::Duration};

use reqwest::Url;
use serde::de::{self, Deserializer, Visitor};

/// How one kind of value is read from the text of its key.
pub trait Kind {
    type Value;

    /// The value of a key set to `text` (trimmed, never blank).
    fn parse(text: &str) -> Result<Self::Value, String>;

    /// The value of a key left unset or blank: most keys must be set.
    fn unset() -> Result<Self::Value, String> {
        Err("required, not set".into())
    }

    /// For a key that must be set, or whose kind gives unset a meaning ([`Kind::unset`]).
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self::Value, D::Error> {
        match text(d)? {
            Some(text) => Self::parse(&text),
            None => Self::unset(),
        }
        .map_err(de::Error::custom)
    }

    /// For a key that may stay unset: `None` then.
    fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Self::Value>, D::Error> {
        text(d)?
            .map(|text| Self::parse(&text))
            .transpose()
            .map_err(de::Error::custom)
    }
}

/// A key's value as trimmed text, whichever type its layer gave it (the files hold numbers and
/// booleans, the environment text); `None` when unset or blank.
pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct Text;

    impl<'de> Visitor<'de> for Text {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("text, a number or a boolean")
        }
        fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
            Ok(Some(s.trim()).filter(|s| !s.is_empty()).map(String::from))
        }
        fn visit_char<E: de::Error>(self, c: char) -> Result<Self::Value, E> {
            self.visit_str(c.encode_utf8(&mut [0; 4]))
        }
        fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
            Ok(Some(b.to_string()))
        }
        fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
            Ok(Some(n.to_string()))
        }
        fn visit_i128<E>(self, n: i128) -> Result<Self::Value, E> {
            Ok(Some(n.to_string()))
        }
        fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
            Ok(Some(n.to_string()))
        }
        fn visit_u128<E>(self, n: u128) -> Result<Self::Value, E> {
            Ok(Some(n.to_string()))
        }
        fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
            Ok(Some(n.to_string()))
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    d.deserialize_option(Text)
}

/// A whole number from `MIN` to `MAX`, as `T`.
pub struct Number<const MIN: u64, const MAX: u64, T = u64>(PhantomData<T>);

impl<const MIN: u64, const MAX: u64, T> Kind for Number<MIN, MAX, T>
where
    T: FromStr + TryInto<u64> + fmt::Display + Copy,
{
    type Value = T;

    fn parse(text: &str) -> Result<T, String> {
        let n: T = text
            .parse()
            .map_err(|_| format!("not a whole number: {text:?}"))?;
        match n.try_into() {
            Ok(wide) if (MIN..=MAX).contains(&wide) => Ok(n),
            _ => Err(format!("must be between {MIN} and {MAX}, got {n}")),
        }
    }
}

/// Seconds from `MIN` to `MAX` (keys ending in `_secs`).
pub struct Secs<const MIN: u64, const MAX: u64>;

impl<const MIN: u64, const MAX: u64> Kind for Secs<MIN, MAX> {
    type Value = Duration;

    fn parse(text: &str) -> Result<Duration, String> {
        Number::<MIN, MAX>::parse(text).map(Duration::from_secs)
    }
}

/// Milliseconds from `MIN` to `MAX` (keys ending in `_ms`).
pub struct Millis<const MIN: u64, const MAX: u64>;

impl<const MIN: u64, const MAX: u64> Kind for Millis<MIN, MAX> {
    type Value = Duration;

    fn parse(text: &str) -> Result<Duration, String> {
        Number::<MIN, MAX>::parse(text).map(Duration::from_millis)
    }
}

/// `true` or `false` (also `1`/`0`, `yes`/`no`, in any case).
pub struct Boolean;

impl Kind for Boolean {
    type Value = bool;

    fn parse(text: &str) -> Result<bool, String> {
        match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            other => Err(format!("expected true or false, got {other:?}")),
        }
    }
}

/// A comma list; unset or blank is the empty list.
pub struct List;

impl Kind for List {
    type Value = Vec<String>;

    fn parse(text: &str) -> Result<Vec<String>, String> {
        Ok(text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect())
    }

    fn unset() -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

/// A URL to call: `https://`, or `http://` for a loopback host only (`localhost`, 127.0.0.0/8,
/// `::1`), with a host and without credentials.
pub struct LoopbackOrHttps;

impl Kind for LoopbackOrHttps {
    type Value = Url;

    fn parse(text: &str) -> Result<Url, String> {
        let url = Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                return Err(
                    "http:// is allowed only for localhost, 127.0.0.0/8 and ::1; use https://"
                        .into(),
                );
            }
            other => return Err(format!("unsupported scheme {other:?}; use https://")),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("has no host".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials".into());
        }
        Ok(url)
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
