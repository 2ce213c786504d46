//! Microsoft Entra ID bearer tokens (placeholder until the credential chain lands).

/// Entra ID token source.
#[derive(Clone, Default)]
pub struct EntraAuth;

/// Failure to get a token.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EntraError(String);

impl EntraAuth {
    /// The default credential chain.
    pub fn from_environment() -> Self {
        Self
    }

    /// A token for `scope`.
    pub async fn bearer_token(&self, scope: &str) -> Result<String, EntraError> {
        Err(EntraError(format!(
            "Microsoft Entra ID is not supported yet (scope {scope}); set an API key"
        )))
    }
}
