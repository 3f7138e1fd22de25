//! Integration tests: the real service on port 0, a real PostgreSQL, the Clerk stand-in over HTTP.
//! One binary, one module per area.

mod breaker;
mod browser;
mod cache;
mod clients;
mod db_tls;
mod first_sight;
mod helpers;
mod hostile;
mod keys;
mod kubernetes;
mod layering;
mod lifecycle;
mod openapi;
mod outage;
mod pooler;
mod schemathesis;
mod storable;
mod storage;
mod sync;
mod token_props;
mod token_rules;
mod webhooks;
mod writes;
