//! Integration tests: the real service on port 0, a real PostgreSQL, the Clerk stand-in over HTTP.
//! One binary, one module per area.

mod breaker;
mod browser;
mod cache;
mod first_sight;
mod helpers;
mod hostile;
mod keys;
mod layering;
mod lifecycle;
mod openapi;
mod storage;
mod sync;
mod token_props;
mod token_rules;
mod webhooks;
mod writes;
