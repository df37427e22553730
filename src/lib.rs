//! jwtgate: JWT verification for nginx `auth_request` and ingress-nginx `auth-url`.
//!
//! The decision core ([`validate`], [`policy`], [`headers`], [`keys`]) is pure; [`gate`] wraps it
//! with the verified-token cache and each issuer's key lifecycle ([`jwks`]); [`http`] serves it.
#![forbid(unsafe_code)]

pub mod algorithm;
pub mod authorization;
pub mod claims;
pub mod cli;
pub mod config;
pub mod dev_issuer;
pub mod dpop;
pub mod error;
pub mod explain;
pub mod gate;
pub mod headers;
pub mod http;
pub mod json;
pub mod jwks;
pub mod keys;
pub mod metrics;
pub mod policy;
pub mod rules;
pub mod shutdown;
pub mod telemetry;
pub mod token_cache;
pub mod validate;
