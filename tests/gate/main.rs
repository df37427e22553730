//! The integration-test binary: the whole service over HTTP against an in-process issuer.

mod attacks;
mod authorization;
mod authorization_docs;
mod cli;
mod dpop;
mod explain;
mod helpers;
mod hostile;
mod http_api;
mod key_lifecycle;
mod nginx;
mod nginx_support;
mod oidc;
mod providers;
mod runtime_contract;
mod tls_idp;
mod wycheproof;
