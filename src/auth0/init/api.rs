//! `init`'s calls go through the one pacing Management API client ([`crate::auth0::Client`]).

use super::{InitError, MgmtApi};
use crate::auth0::{Auth0Error, Client};
use reqwest::Method;
use serde_json::Value;

/// The scopes Auth0 names in a 403 (`Insufficient scope, expected any of: a,b`), else the message.
fn scopes_named(message: &str) -> String {
    message
        .split_once("expected any of:")
        .map(|(_, s)| s.trim().to_string())
        .unwrap_or_else(|| message.to_string())
}

impl From<Auth0Error> for InitError {
    fn from(e: Auth0Error) -> Self {
        match e {
            Auth0Error::NoCredentials
            | Auth0Error::Credentials { .. }
            | Auth0Error::Unauthorized { .. } => InitError::Credentials(e.to_string()),
            Auth0Error::NoTenant => InitError::Usage(e.to_string()),
            Auth0Error::Forbidden { message, url } => InitError::Scope {
                scopes: scopes_named(&message),
                message: format!("{message} at {url}"),
            },
            other => InitError::Api(other.to_string()),
        }
    }
}

#[async_trait::async_trait]
impl MgmtApi for Client {
    async fn get(&self, path: &str) -> Result<Value, InitError> {
        Ok(self.json(Method::GET, path, None).await?)
    }
    async fn post(&self, path: &str, body: &Value) -> Result<Value, InitError> {
        Ok(self.json(Method::POST, path, Some(body)).await?)
    }
    async fn patch(&self, path: &str, body: &Value) -> Result<Value, InitError> {
        Ok(self.json(Method::PATCH, path, Some(body)).await?)
    }
    async fn granted_scopes(&self) -> Result<Option<Vec<String>>, InitError> {
        Ok(Client::granted_scopes(self).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_scope_is_named() {
        let e: InitError = Auth0Error::Forbidden {
            url: "https://t/api/v2/clients".into(),
            message: "Insufficient scope, expected any of: create:clients".into(),
        }
        .into();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains("lack the scope(s) create:clients"),
            "{e}"
        );
        let e: InitError = Auth0Error::NoCredentials.into();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("AUTH0_MGMT_TOKEN"), "{e}");
    }
}
