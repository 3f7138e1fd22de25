//! The kinds of the HTTP keys: where the service listens and which origins CORS allows. (The
//! keys themselves, with the request limits, are fields of `Settings`.)

use std::net::SocketAddr;

use reqwest::Url;

use super::kinds::{Kind, List};

/// `host:port`, such as `0.0.0.0:8000`.
pub struct ListenAddr;

impl Kind for ListenAddr {
    type Value = SocketAddr;

    fn parse(text: &str) -> Result<SocketAddr, String> {
        text.parse()
            .map_err(|_| format!("expected host:port such as 0.0.0.0:8000, got {text:?}"))
    }
}

/// A comma list of origins (`scheme://host[:port]`, exactly as browsers send them in `Origin`);
/// empty = no CORS headers.
pub struct Origins;

impl Kind for Origins {
    type Value = Vec<String>;

    fn parse(text: &str) -> Result<Vec<String>, String> {
        let origins = List::parse(text)?;
        for origin in &origins {
            let url = Url::parse(origin).map_err(|_| format!("{origin:?} is not an origin"))?;
            if url.origin().ascii_serialization() != *origin {
                return Err(format!(
                    "{origin:?} is not an origin (scheme://host[:port], no path or trailing /)"
                ));
            }
        }
        Ok(origins)
    }

    fn unset() -> Result<Vec<String>, String> {
        List::unset()
    }
}
