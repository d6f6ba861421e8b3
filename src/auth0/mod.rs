//! Auth0 Management API v2: one rate-limit-pacing [`client::Client`] for all of flexgate's use.

pub mod client;
pub mod init;
pub mod management;
pub mod pacer;
pub mod prefetch;
pub mod roles;
pub mod users;

pub use client::{Auth0Error, Client, ClientConfig, Credentials};
