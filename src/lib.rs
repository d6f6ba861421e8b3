//! flexgate: a SAML 2.0 identity provider for Twilio Flex that hands every login to an OpenID
//! Connect provider. See the README for the architecture; one login flows through
//! `web::sso` → `login::begin_*` → upstream → `web::callback` → `login::finish`.

pub mod auth0;
pub mod blocking;
pub mod capture;
pub mod check;
pub mod clock;
pub mod config;
pub mod constant_time;
pub mod demo;
pub mod digest;
pub mod directory;
pub mod flex;
pub mod flex_console;
pub mod flex_roles;
pub mod http_client;
pub mod keygen;
pub mod login;
pub mod metrics;
pub mod mfa;
pub mod oidc;
pub mod pkcs11;
pub mod provider;
pub mod qa;
pub mod saml;
pub mod secret;
pub mod serve;
pub mod store;
pub mod trace;
pub mod web;
pub mod x509;
