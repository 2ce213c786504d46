//! Microsoft Entra ID bearer tokens for the realtime AIs: Voice Live wants scope
//! `https://ai.azure.com/.default` (protocols.md §6.1), Azure OpenAI
//! `https://cognitiveservices.azure.com/.default` or `https://ai.azure.com/.default` (§7.1).
//!
//! The Rust `azure_identity` 1.0 has no `DefaultAzureCredential`, so [`EntraAuth::from_environment`]
//! builds the same chain from its credentials, in the same order: client secret from the
//! environment, workload identity, managed identity, then the developer tools (Azure CLI, then
//! Azure Developer CLI: the crate's `DeveloperToolsCredential`). Steps that are not configured are
//! skipped with a reason; the first step that produces a token is used from then on (as the SDKs'
//! chains do), so a working setup pays for the probing only once.
//!
//! Tokens are kept per scope until 5 minutes before expiry (the crate's own rule). The crate's
//! directory and managed-identity credentials cache too, but its CLI credentials run `az`/`azd`
//! on every request, and none of them keep a still-valid token when a refresh fails: hence the
//! small cache in [`EntraAuth`].
//!
//! `azure_core` is used without its `reqwest` feature (that one pulls reqwest 0.13 and aws-lc-rs);
//! token requests go through [`ReqwestTransport`], an adapter over the workspace's reqwest 0.12
//! with rustls. Every credential built here therefore gets an explicit transport: without one,
//! `azure_core` panics when it builds its pipeline.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use azure_core::credentials::{AccessToken, Secret, TokenCredential};
use azure_core::error::ErrorKind;
use azure_core::http::headers::{HeaderName, HeaderValue, Headers};
use azure_core::http::{AsyncRawResponse, Body, ClientOptions, HttpClient, Request, StatusCode, Transport};
use azure_core::time::OffsetDateTime;
use azure_identity::{
    AzureCliCredential, AzureDeveloperCliCredential, ClientAssertionCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, DeveloperToolsCredential, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use tokio::sync::OnceCell;

/// Refresh a token when less than this is left (as azure_identity's own cache does).
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// After a failed refresh, keep serving the old token this long before trying again, so a
/// broken credential is not hammered by every new call.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// An old token with less than this left is not handed out: the WebSocket upgrade that carries
/// it still has to reach the service.
const MIN_USABLE: Duration = Duration::from_secs(30);

/// Client secret and workload identity: a round trip to login.microsoftonline.com, plus the
/// pipeline's own retries.
const DIRECTORY_TIMEOUT: Duration = Duration::from_secs(20);
/// Whether IMDS exists is decided by one quick request (as the SDKs' chains do): off Azure the
/// link-local address usually swallows packets, and the credential itself would retry for 72 s.
const IMDS_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Managed identity once the endpoint is known to exist.
const MANAGED_IDENTITY_TIMEOUT: Duration = Duration::from_secs(10);
/// `az`/`azd` start an interpreter and may refresh their own tokens; cold starts take seconds.
/// The developer-tools step may run both, one after the other.
const DEVELOPER_TOOL_TIMEOUT: Duration = Duration::from_secs(20);
/// A credential handed to [`EntraAuth::with_credential`].
const INJECTED_TIMEOUT: Duration = Duration::from_secs(30);

/// Error messages from credentials are cut to this many characters (az prints whole help texts).
const MAX_REASON_CHARS: usize = 600;

/// IMDS token endpoint, probed without the `Metadata` header: any HTTP answer proves it exists.
const IMDS_URL: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

const CLIENT_SECRET: &str = "ClientSecretCredential";
const WORKLOAD_IDENTITY: &str = "WorkloadIdentityCredential";
const MANAGED_IDENTITY: &str = "ManagedIdentityCredential";
const DEVELOPER_TOOLS: &str = "DeveloperToolsCredential";
const AZURE_CLI: &str = "AzureCliCredential";
const AZURE_DEVELOPER_CLI: &str = "AzureDeveloperCliCredential";

/// Why no bearer token could be had. Messages name the credential but never carry tokens or
/// secrets (known secrets and JWT-looking words are redacted).
#[derive(Debug, thiserror::Error)]
pub enum EntraError {
    /// Every step of the environment chain was skipped or failed; `attempts` says why, in order.
    #[error("no Microsoft Entra ID credential produced a token for {scope}: {}", list_attempts(.attempts))]
    NoCredential {
        /// The scope asked for.
        scope: String,
        /// One entry per step of the chain.
        attempts: Vec<Attempt>,
    },
    /// The credential in use failed.
    #[error("{credential} could not get a token for {scope}: {reason}")]
    Credential {
        /// Type name of the credential (e.g. `AzureCliCredential`).
        credential: String,
        /// The scope asked for.
        scope: String,
        /// What it said, redacted and shortened.
        reason: String,
    },
    /// The credential in use did not answer in time.
    #[error("{credential} did not return a token for {scope} within {after:?}")]
    Timeout {
        /// Type name of the credential.
        credential: String,
        /// The scope asked for.
        scope: String,
        /// The limit that passed.
        after: Duration,
    },
}

/// What one step of the credential chain did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Type name of the credential.
    pub credential: String,
    /// True when the step was not configured (or excluded) and was not tried.
    pub skipped: bool,
    /// Why it was skipped or how it failed.
    pub reason: String,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.skipped { "skipped" } else { "failed" };
        write!(f, "{} {verb} ({})", self.credential, self.reason)
    }
}

fn list_attempts(attempts: &[Attempt]) -> String {
    attempts.iter().map(Attempt::to_string).collect::<Vec<_>>().join("; ")
}

/// Source of Entra ID bearer tokens, cached per scope. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct EntraAuth {
    inner: Arc<Inner>,
}

struct Inner {
    provider: Provider,
    /// Per scope; the async lock makes concurrent callers share one fetch.
    tokens: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Cached>>>>>,
}

enum Provider {
    /// The chain is built on first use: reading the environment, the federated token file and
    /// `PATH` is wasted work for servers that only use API keys.
    Environment(OnceLock<Chain>),
    Fixed(Step),
}

struct Cached {
    token: AccessToken,
    /// Set after a failed refresh: until then the old token is served without asking again.
    retry_at: Option<OffsetDateTime>,
}

impl fmt::Debug for EntraAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.inner.provider {
            Provider::Environment(_) => "environment chain",
            Provider::Fixed(step) => step.name.as_str(),
        };
        f.debug_struct("EntraAuth")
            .field("source", &source)
            .finish_non_exhaustive()
    }
}

impl EntraAuth {
    /// The `DefaultAzureCredential`-like chain over the process environment, built on first use.
    pub fn from_environment() -> Self {
        Self::new(Provider::Environment(OnceLock::new()))
    }

    /// Tokens from one given credential (tests, or a caller that builds its own).
    pub fn with_credential(cred: Arc<dyn TokenCredential>) -> Self {
        let name = credential_name(cred.as_ref());
        Self::new(Provider::Fixed(Step::ready(name, cred, INJECTED_TIMEOUT, None)))
    }

    fn new(provider: Provider) -> Self {
        Self {
            inner: Arc::new(Inner {
                provider,
                tokens: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A bearer token for `scope`, from the cache unless it is close to expiry.
    pub async fn bearer_token(&self, scope: &str) -> Result<String, EntraError> {
        let slot = {
            // A poisoned lock only means another caller panicked while inserting an entry.
            let mut tokens = self.inner.tokens.lock().unwrap_or_else(|p| p.into_inner());
            tokens.entry(scope.to_owned()).or_default().clone()
        };
        let mut cached = slot.lock().await;
        let now = OffsetDateTime::now_utc();
        if let Some(c) = cached.as_ref() {
            let fresh = c.token.expires_on > now + REFRESH_MARGIN;
            let waiting = c.retry_at.is_some_and(|at| now < at) && c.token.expires_on > now + MIN_USABLE;
            if fresh || waiting {
                return Ok(c.token.token.secret().to_owned());
            }
        }
        match self.inner.provider.fetch(scope).await {
            Ok(token) => {
                let secret = token.token.secret().to_owned();
                *cached = Some(Cached { token, retry_at: None });
                Ok(secret)
            }
            Err(error) => match cached.as_mut() {
                Some(c) if c.token.expires_on > now + MIN_USABLE => {
                    tracing::warn!(
                        %error,
                        scope,
                        remaining_s = (c.token.expires_on - now).whole_seconds(),
                        "Entra ID token refresh failed; using the current token until it expires"
                    );
                    c.retry_at = Some(now + RETRY_AFTER_FAILURE);
                    Ok(c.token.token.secret().to_owned())
                }
                _ => Err(error),
            },
        }
    }
}

impl Provider {
    async fn fetch(&self, scope: &str) -> Result<AccessToken, EntraError> {
        match self {
            Provider::Environment(chain) => {
                // Building reads a small file; cheap enough to do inline once.
                let chain = chain.get_or_init(|| Chain::from_lookup(&|key| std::env::var(key).ok()));
                chain.get_token(scope).await
            }
            Provider::Fixed(step) => step
                .get_token(scope, &Scrubber::default())
                .await
                .map_err(|f| f.into_error(&step.name, scope)),
        }
    }
}

/// Type name of a credential from its `Debug` output, without module path or fields
/// (`azure_identity::AzureCliCredential { .. }` → `AzureCliCredential`).
fn credential_name(cred: &dyn TokenCredential) -> String {
    let debug = format!("{cred:?}");
    let path = debug
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .next()
        .unwrap_or_default();
    match path.rsplit("::").next() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => "TokenCredential".to_owned(),
    }
}

/// One link of the chain.
struct Step {
    name: String,
    state: StepState,
}

enum StepState {
    Skipped(String),
    Ready {
        credential: Arc<dyn TokenCredential>,
        timeout: Duration,
        /// Managed identity on IMDS is only tried once the endpoint answered a quick probe.
        probe: Option<ImdsProbe>,
    },
}

enum StepFailure {
    Failed(String),
    TimedOut(Duration),
}

impl StepFailure {
    fn reason(&self) -> String {
        match self {
            StepFailure::Failed(reason) => reason.clone(),
            StepFailure::TimedOut(after) => format!("no answer within {after:?}"),
        }
    }

    fn into_error(self, credential: &str, scope: &str) -> EntraError {
        match self {
            StepFailure::Failed(reason) => EntraError::Credential {
                credential: credential.to_owned(),
                scope: scope.to_owned(),
                reason,
            },
            StepFailure::TimedOut(after) => EntraError::Timeout {
                credential: credential.to_owned(),
                scope: scope.to_owned(),
                after,
            },
        }
    }
}

impl Step {
    fn skipped(name: &str, reason: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            state: StepState::Skipped(reason.into()),
        }
    }

    fn ready(
        name: impl Into<String>,
        credential: Arc<dyn TokenCredential>,
        timeout: Duration,
        probe: Option<ImdsProbe>,
    ) -> Self {
        Self {
            name: name.into(),
            state: StepState::Ready {
                credential,
                timeout,
                probe,
            },
        }
    }

    async fn get_token(&self, scope: &str, scrubber: &Scrubber) -> Result<AccessToken, StepFailure> {
        let (credential, timeout, probe) = match &self.state {
            StepState::Skipped(reason) => return Err(StepFailure::Failed(reason.clone())),
            StepState::Ready {
                credential,
                timeout,
                probe,
            } => (credential, *timeout, probe),
        };
        if let Some(probe) = probe {
            probe.check().await.map_err(StepFailure::Failed)?;
        }
        match tokio::time::timeout(timeout, credential.get_token(&[scope], None)).await {
            Err(_) => Err(StepFailure::TimedOut(timeout)),
            Ok(Err(e)) => Err(StepFailure::Failed(scrubber.clean(&describe(&e)))),
            Ok(Ok(token)) if token.token.secret().is_empty() => {
                Err(StepFailure::Failed("returned an empty token".into()))
            }
            Ok(Ok(token)) => Ok(token),
        }
    }
}

/// `e` and its sources, joined (azure_core wraps the useful part, e.g. AADSTS codes, as a source).
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        let text = text.trim();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(text)) {
            parts.push(text.to_owned());
        }
        current = err.source();
    }
    parts.join(": ")
}

/// Removes secrets from text headed for logs and error messages.
#[derive(Default)]
struct Scrubber {
    secrets: Vec<String>,
}

impl Scrubber {
    fn clean(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.secrets {
            // Very short values would redact ordinary words; Entra secrets are 40 characters.
            if secret.len() >= 8 {
                text = text.replace(secret.as_str(), "[redacted]");
            }
        }
        let text = redact_jwts(&text);
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        match text.char_indices().nth(MAX_REASON_CHARS) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text,
        }
    }
}

/// Replaces anything shaped like a JWT (base64url starting with `eyJ`, i.e. `{"`) by a marker.
fn redact_jwts(text: &str) -> String {
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("eyJ") {
        let before_is_boundary = rest[..start].chars().next_back().is_none_or(|c| !is_token_char(c));
        let len = rest[start..]
            .find(|c: char| !is_token_char(c))
            .unwrap_or(rest.len() - start);
        out.push_str(&rest[..start]);
        if before_is_boundary && len >= 20 {
            out.push_str("[redacted token]");
        } else {
            out.push_str(&rest[start..start + len]);
        }
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    out
}

/// The credential chain over one environment.
struct Chain {
    steps: Vec<Step>,
    scrubber: Scrubber,
    /// Index of the step that produced the first token; used alone from then on.
    chosen: OnceLock<usize>,
}

impl Chain {
    async fn get_token(&self, scope: &str) -> Result<AccessToken, EntraError> {
        if let Some(step) = self.chosen.get().and_then(|&i| self.steps.get(i)) {
            return step
                .get_token(scope, &self.scrubber)
                .await
                .map_err(|f| f.into_error(&step.name, scope));
        }
        let mut attempts = Vec::with_capacity(self.steps.len());
        for (index, step) in self.steps.iter().enumerate() {
            if let StepState::Skipped(reason) = &step.state {
                attempts.push(Attempt {
                    credential: step.name.clone(),
                    skipped: true,
                    reason: reason.clone(),
                });
                continue;
            }
            match step.get_token(scope, &self.scrubber).await {
                Ok(token) => {
                    if self.chosen.set(index).is_ok() {
                        tracing::info!(credential = %step.name, "Microsoft Entra ID tokens come from {}", step.name);
                    }
                    return Ok(token);
                }
                Err(failure) => {
                    tracing::debug!(credential = %step.name, reason = %failure.reason(), "Entra ID credential failed");
                    attempts.push(Attempt {
                        credential: step.name.clone(),
                        skipped: false,
                        reason: failure.reason(),
                    });
                }
            }
        }
        Err(EntraError::NoCredential {
            scope: scope.to_owned(),
            attempts,
        })
    }

    /// Builds the chain from an environment lookup (the process environment in production).
    ///
    /// `ManagedIdentityCredential` and the CLI credentials read a few variables themselves from
    /// the process environment (App Service's `IDENTITY_*`, `AZURE_AUTHORITY_HOST`); the decisions
    /// here use the same variables, so both agree when `lookup` is the process environment.
    fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Self {
        let var = |key: &str| lookup(key).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let selection = Selection::parse(var("AZURE_TOKEN_CREDENTIALS"));
        let secret = var("AZURE_CLIENT_SECRET");
        let scrubber = Scrubber {
            secrets: secret.iter().cloned().collect(),
        };

        let steps: Vec<Step> = [CLIENT_SECRET, WORKLOAD_IDENTITY, MANAGED_IDENTITY, DEVELOPER_TOOLS]
            .into_iter()
            .map(|name| match selection.excludes(name) {
                Some(reason) => Step::skipped(name, reason),
                None => match name {
                    CLIENT_SECRET => client_secret_step(&var, secret.clone()),
                    WORKLOAD_IDENTITY => workload_identity_step(&var),
                    MANAGED_IDENTITY => managed_identity_step(&var),
                    _ => developer_tools_step(&selection),
                },
            })
            .collect();

        for step in &steps {
            match &step.state {
                StepState::Skipped(reason) => {
                    tracing::debug!(credential = %step.name, reason = %scrubber.clean(reason), "Entra ID credential skipped")
                }
                StepState::Ready { .. } => tracing::debug!(credential = %step.name, "Entra ID credential configured"),
            }
        }
        Self {
            steps,
            scrubber,
            chosen: OnceLock::new(),
        }
    }
}

/// `AZURE_TOKEN_CREDENTIALS`, as in the SDKs' `DefaultAzureCredential`: `dev` keeps the developer
/// tools, `prod` the rest, a credential name keeps only that one.
enum Selection {
    All,
    Dev,
    Prod,
    Only(&'static str),
    Invalid(String),
}

impl Selection {
    fn parse(value: Option<String>) -> Self {
        let Some(value) = value else {
            return Selection::All;
        };
        let v = value.to_ascii_lowercase();
        match v.as_str() {
            "dev" | "developertoolscredential" => Selection::Dev,
            "prod" => Selection::Prod,
            // The SDKs call the client-secret step EnvironmentCredential.
            "environmentcredential" | "clientsecretcredential" => Selection::Only(CLIENT_SECRET),
            "workloadidentitycredential" => Selection::Only(WORKLOAD_IDENTITY),
            "managedidentitycredential" => Selection::Only(MANAGED_IDENTITY),
            "azureclicredential" => Selection::Only(AZURE_CLI),
            "azuredeveloperclicredential" => Selection::Only(AZURE_DEVELOPER_CLI),
            _ => Selection::Invalid(value),
        }
    }

    fn excludes(&self, name: &str) -> Option<String> {
        let developer_tools = name == DEVELOPER_TOOLS;
        let excluded = match self {
            Selection::All => false,
            Selection::Dev => !developer_tools,
            Selection::Prod => developer_tools,
            // The developer-tools step then runs only the CLI named.
            Selection::Only(AZURE_CLI | AZURE_DEVELOPER_CLI) => !developer_tools,
            Selection::Only(only) => *only != name,
            Selection::Invalid(value) => {
                return Some(format!(
                    "AZURE_TOKEN_CREDENTIALS={value} is not dev, prod or a credential name"
                ));
            }
        };
        let value = match self {
            Selection::Dev => "dev",
            Selection::Prod => "prod",
            Selection::Only(only) => only,
            _ => "",
        };
        excluded.then(|| format!("excluded by AZURE_TOKEN_CREDENTIALS={value}"))
    }
}

fn missing(var: &dyn Fn(&str) -> Option<String>, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .filter(|k| var(k).is_none())
        .map(|k| (*k).to_owned())
        .collect()
}

fn client_secret_step(var: &dyn Fn(&str) -> Option<String>, secret: Option<String>) -> Step {
    let absent = missing(var, &["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"]);
    if !absent.is_empty() {
        let mut reason = format!("{} not set", absent.join(", "));
        if secret.is_none() && var("AZURE_CLIENT_CERTIFICATE_PATH").is_some() {
            // ClientCertificateCredential needs azure_identity's `client_certificate` feature,
            // i.e. OpenSSL; we build without it.
            reason.push_str("; AZURE_CLIENT_CERTIFICATE_PATH is set but certificate credentials are not built in");
        }
        return Step::skipped(CLIENT_SECRET, reason);
    }
    let (Some(tenant), Some(client), Some(secret)) = (var("AZURE_TENANT_ID"), var("AZURE_CLIENT_ID"), secret) else {
        return Step::skipped(CLIENT_SECRET, "environment changed while reading it");
    };
    let client_options = match client_options(false) {
        Ok(o) => o,
        Err(reason) => return Step::skipped(CLIENT_SECRET, reason),
    };
    let options = ClientSecretCredentialOptions { client_options };
    match ClientSecretCredential::new(&tenant, client, Secret::new(secret), Some(options)) {
        Ok(cred) => Step::ready(CLIENT_SECRET, cred, DIRECTORY_TIMEOUT, None),
        Err(e) => Step::skipped(CLIENT_SECRET, format!("invalid configuration: {}", describe(&e))),
    }
}

fn workload_identity_step(var: &dyn Fn(&str) -> Option<String>) -> Step {
    let absent = missing(
        var,
        &["AZURE_FEDERATED_TOKEN_FILE", "AZURE_TENANT_ID", "AZURE_CLIENT_ID"],
    );
    if !absent.is_empty() {
        return Step::skipped(WORKLOAD_IDENTITY, format!("{} not set", absent.join(", ")));
    }
    let client_options = match client_options(false) {
        Ok(o) => o,
        Err(reason) => return Step::skipped(WORKLOAD_IDENTITY, reason),
    };
    // Pass everything explicitly so the credential uses our lookup, not the process environment.
    let options = WorkloadIdentityCredentialOptions {
        credential_options: ClientAssertionCredentialOptions { client_options },
        client_id: var("AZURE_CLIENT_ID"),
        tenant_id: var("AZURE_TENANT_ID"),
        token_file_path: var("AZURE_FEDERATED_TOKEN_FILE").map(Into::into),
    };
    // Reads the federated token file now; a missing file skips the step with the reason.
    match WorkloadIdentityCredential::new(Some(options)) {
        Ok(cred) => Step::ready(WORKLOAD_IDENTITY, cred, DIRECTORY_TIMEOUT, None),
        Err(e) => Step::skipped(WORKLOAD_IDENTITY, format!("invalid configuration: {}", describe(&e))),
    }
}

fn managed_identity_step(var: &dyn Fn(&str) -> Option<String>) -> Step {
    // Same source detection as azure_identity 1.0 (managed_identity_credential.rs get_source);
    // it implements only App Service and IMDS, so the other hosts are skipped with a reason.
    let unsupported = if var("IDENTITY_ENDPOINT").is_some() {
        if var("IDENTITY_HEADER").is_some() {
            var("IDENTITY_SERVER_THUMBPRINT").map(|_| "Service Fabric")
        } else {
            var("IMDS_ENDPOINT").map(|_| "Azure Arc")
        }
    } else if var("MSI_ENDPOINT").is_some() {
        Some(if var("MSI_SECRET").is_some() {
            "Azure ML"
        } else {
            "Cloud Shell"
        })
    } else {
        None
    };
    if let Some(host) = unsupported {
        return Step::skipped(
            MANAGED_IDENTITY,
            format!("{host} managed identity is not supported by azure_identity"),
        );
    }
    let app_service = var("IDENTITY_ENDPOINT").is_some() && var("IDENTITY_HEADER").is_some();

    // Off App Service the endpoint is IMDS at a link-local address: proxies must not see it.
    let client_options = match client_options(true) {
        Ok(o) => o,
        Err(reason) => return Step::skipped(MANAGED_IDENTITY, reason),
    };
    let options = ManagedIdentityCredentialOptions {
        // DefaultAzureCredential also reads AZURE_CLIENT_ID as the user-assigned identity.
        user_assigned_id: var("AZURE_CLIENT_ID").map(UserAssignedId::ClientId),
        client_options,
    };
    let probe = if app_service {
        None
    } else {
        match ImdsProbe::new(IMDS_URL) {
            Ok(p) => Some(p),
            Err(reason) => return Step::skipped(MANAGED_IDENTITY, reason),
        }
    };
    match ManagedIdentityCredential::new(Some(options)) {
        Ok(cred) => Step::ready(MANAGED_IDENTITY, cred, MANAGED_IDENTITY_TIMEOUT, probe),
        Err(e) => Step::skipped(MANAGED_IDENTITY, format!("invalid configuration: {}", describe(&e))),
    }
}

/// `az` then `azd` (azure_identity's `DeveloperToolsCredential`), or just the one that
/// `AZURE_TOKEN_CREDENTIALS` names.
fn developer_tools_step(selection: &Selection) -> Step {
    let (name, credential, timeout): (&str, azure_core::Result<Arc<dyn TokenCredential>>, Duration) = match selection {
        Selection::Only(AZURE_CLI) => (
            AZURE_CLI,
            AzureCliCredential::new(None).map(|c| c as Arc<dyn TokenCredential>),
            DEVELOPER_TOOL_TIMEOUT,
        ),
        Selection::Only(AZURE_DEVELOPER_CLI) => (
            AZURE_DEVELOPER_CLI,
            AzureDeveloperCliCredential::new(None).map(|c| c as Arc<dyn TokenCredential>),
            DEVELOPER_TOOL_TIMEOUT,
        ),
        _ => (
            DEVELOPER_TOOLS,
            DeveloperToolsCredential::new(None).map(|c| c as Arc<dyn TokenCredential>),
            2 * DEVELOPER_TOOL_TIMEOUT,
        ),
    };
    match credential {
        Ok(cred) => Step::ready(name, cred, timeout, None),
        Err(e) => Step::skipped(name, format!("invalid configuration: {}", describe(&e))),
    }
}

/// Pipeline options with our reqwest 0.12 transport.
fn client_options(direct: bool) -> Result<ClientOptions, String> {
    let transport = ReqwestTransport::new(direct)?;
    Ok(ClientOptions {
        transport: Some(Transport::new(Arc::new(transport))),
        ..Default::default()
    })
}

/// Decides once whether the IMDS endpoint exists.
struct ImdsProbe {
    url: String,
    client: reqwest::Client,
    result: OnceCell<Result<(), String>>,
}

impl ImdsProbe {
    fn new(url: &str) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(IMDS_PROBE_TIMEOUT)
            .timeout(IMDS_PROBE_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {}", describe(&e.without_url())))?;
        Ok(Self {
            url: url.to_owned(),
            client,
            result: OnceCell::new(),
        })
    }

    /// Any HTTP answer (IMDS says 400 without the `Metadata` header) means the endpoint exists.
    /// The result is kept: off Azure, every later call skips managed identity at once.
    async fn check(&self) -> Result<(), String> {
        self.result
            .get_or_init(|| async {
                match self.client.get(&self.url).send().await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!(
                        "no IMDS endpoint answered within {IMDS_PROBE_TIMEOUT:?} (not on an Azure VM?): {}",
                        describe(&e.without_url())
                    )),
                }
            })
            .await
            .clone()
    }
}

/// `azure_core` HTTP client over the workspace's reqwest 0.12 (rustls, no OpenSSL).
#[derive(Debug)]
struct ReqwestTransport(reqwest::Client);

impl ReqwestTransport {
    /// `direct` bypasses proxies (for the link-local IMDS endpoint).
    fn new(direct: bool) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            // The identity endpoints do not redirect; following one could send a secret elsewhere.
            .redirect(reqwest::redirect::Policy::none());
        if direct {
            builder = builder.no_proxy();
        }
        builder
            .build()
            .map(Self)
            .map_err(|e| format!("cannot build an HTTP client: {}", describe(&e.without_url())))
    }
}

#[async_trait::async_trait]
impl HttpClient for ReqwestTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let method = reqwest::Method::from_bytes(request.method().to_string().as_bytes())
            .map_err(|e| azure_core::Error::with_error(ErrorKind::Other, e, "unsupported HTTP method"))?;
        let mut builder = self.0.request(method, request.url().as_str());
        for (name, value) in request.headers().iter() {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder = match request.body() {
            Body::Bytes(bytes) => builder.body(bytes.clone()),
            // Token requests are small forms; streaming uploads would need reqwest's `stream`.
            _ => {
                return Err(azure_core::Error::with_message(
                    ErrorKind::Other,
                    "streamed request bodies are not supported by this transport",
                ));
            }
        };
        let io_error = |e: reqwest::Error| {
            // The URL can carry a client id in its query; keep it out of messages.
            let kind = if e.is_connect() {
                ErrorKind::Connection
            } else {
                ErrorKind::Io
            };
            azure_core::Error::with_error(kind, e.without_url(), "HTTP request failed")
        };
        let response = builder.send().await.map_err(io_error)?;
        let status = StatusCode::from(response.status().as_u16());
        let mut headers = Headers::new();
        for (name, value) in response.headers() {
            if let Ok(value) = value.to_str() {
                headers.insert(
                    HeaderName::from(name.as_str().to_owned()),
                    HeaderValue::from(value.to_owned()),
                );
            }
        }
        let body = response.bytes().await.map_err(io_error)?;
        Ok(AsyncRawResponse::from_bytes(status, headers, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::{Method, Url};
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Notify;

    const SCOPE: &str = "https://ai.azure.com/.default";
    const OTHER_SCOPE: &str = "https://cognitiveservices.azure.com/.default";

    /// Scripted credential: answers from `script` (then repeats `default_lifetime` tokens) and
    /// counts calls. Tokens are `tok-<call>-<scope>`.
    #[derive(Default)]
    struct FakeCredential {
        calls: AtomicUsize,
        script: Mutex<VecDeque<Result<Duration, String>>>,
        default_lifetime: Option<Duration>,
        /// When set, every call waits for a notification before answering.
        gate: Option<Arc<Notify>>,
        entered: Notify,
    }

    impl fmt::Debug for FakeCredential {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("FakeCredential").finish_non_exhaustive()
        }
    }

    impl FakeCredential {
        fn lasting(lifetime: Duration) -> Arc<Self> {
            Arc::new(Self {
                default_lifetime: Some(lifetime),
                ..Default::default()
            })
        }

        fn scripted(script: Vec<Result<Duration, &str>>) -> Arc<Self> {
            Arc::new(Self {
                script: Mutex::new(script.into_iter().map(|r| r.map_err(str::to_owned)).collect()),
                ..Default::default()
            })
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait::async_trait]
    impl TokenCredential for FakeCredential {
        async fn get_token(
            &self,
            scopes: &[&str],
            _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            self.entered.notify_one();
            if let Some(gate) = &self.gate {
                gate.notified().await;
            }
            let next = self.script.lock().unwrap().pop_front();
            let lifetime = match next {
                Some(Ok(l)) => l,
                Some(Err(message)) => return Err(azure_core::Error::with_message(ErrorKind::Credential, message)),
                None => self.default_lifetime.unwrap_or(Duration::from_secs(3600)),
            };
            let expires_on = OffsetDateTime::now_utc() + lifetime;
            Ok(AccessToken::new(format!("tok-{n}-{}", scopes.join(" ")), expires_on))
        }
    }

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("entra-test-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn states(chain: &Chain) -> Vec<(String, Option<String>)> {
        chain
            .steps
            .iter()
            .map(|s| match &s.state {
                StepState::Skipped(reason) => (s.name.clone(), Some(reason.clone())),
                StepState::Ready { .. } => (s.name.clone(), None),
            })
            .collect()
    }

    fn ready(chain: &Chain) -> Vec<String> {
        states(chain)
            .into_iter()
            .filter(|(_, r)| r.is_none())
            .map(|(n, _)| n)
            .collect()
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn entra_auth_is_send_sync_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<EntraAuth>();
    }

    #[tokio::test]
    async fn token_is_cached_per_scope() {
        let fake = FakeCredential::lasting(60 * MIN);
        let auth = EntraAuth::with_credential(fake.clone());
        let first = auth.bearer_token(SCOPE).await.unwrap();
        assert_eq!(first, format!("tok-1-{SCOPE}"));
        assert_eq!(auth.bearer_token(SCOPE).await.unwrap(), first);
        // Clones share the cache.
        assert_eq!(auth.clone().bearer_token(SCOPE).await.unwrap(), first);
        assert_eq!(fake.calls(), 1);
        assert_eq!(
            auth.bearer_token(OTHER_SCOPE).await.unwrap(),
            format!("tok-2-{OTHER_SCOPE}")
        );
        assert_eq!(
            auth.bearer_token(OTHER_SCOPE).await.unwrap(),
            format!("tok-2-{OTHER_SCOPE}")
        );
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let gate = Arc::new(Notify::new());
        let fake = Arc::new(FakeCredential {
            gate: Some(gate.clone()),
            ..Default::default()
        });
        let auth = EntraAuth::with_credential(fake.clone());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let auth = auth.clone();
                tokio::spawn(async move { auth.bearer_token(SCOPE).await })
            })
            .collect();
        fake.entered.notified().await;
        // Let every other task reach the refresh lock while the first fetch is held open.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert_eq!(fake.calls(), 1);
        gate.notify_one();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), format!("tok-1-{SCOPE}"));
        }
        assert_eq!(fake.calls(), 1);
    }

    #[tokio::test]
    async fn token_is_refreshed_five_minutes_before_expiry() {
        let fake = FakeCredential::scripted(vec![Ok(6 * MIN), Ok(4 * MIN)]);
        let auth = EntraAuth::with_credential(fake.clone());
        assert_eq!(auth.bearer_token(SCOPE).await.unwrap(), format!("tok-1-{SCOPE}"));
        assert_eq!(auth.bearer_token(SCOPE).await.unwrap(), format!("tok-1-{SCOPE}"));
        assert_eq!(fake.calls(), 1);
        // Four minutes left is inside the margin: every request asks again.
        assert_eq!(
            auth.bearer_token(OTHER_SCOPE).await.unwrap(),
            format!("tok-2-{OTHER_SCOPE}")
        );
        assert_eq!(
            auth.bearer_token(OTHER_SCOPE).await.unwrap(),
            format!("tok-3-{OTHER_SCOPE}")
        );
        assert_eq!(fake.calls(), 3);
    }

    #[tokio::test]
    async fn failed_refresh_keeps_the_valid_token_then_errors_when_too_close_to_expiry() {
        let fake = FakeCredential::scripted(vec![Ok(4 * MIN), Err("directory down"), Err("still down")]);
        let auth = EntraAuth::with_credential(fake.clone());
        let token = auth.bearer_token(SCOPE).await.unwrap();
        assert_eq!(auth.bearer_token(SCOPE).await.unwrap(), token);
        assert_eq!(fake.calls(), 2);
        // Within RETRY_AFTER_FAILURE the old token is served without asking again.
        assert_eq!(auth.bearer_token(SCOPE).await.unwrap(), token);
        assert_eq!(fake.calls(), 2);

        // A token with less than MIN_USABLE left is not served when the refresh fails.
        let fake = FakeCredential::scripted(vec![Ok(MIN_USABLE / 2), Err("still down")]);
        let auth = EntraAuth::with_credential(fake.clone());
        let token = auth.bearer_token(SCOPE).await.unwrap();
        let err = auth.bearer_token(SCOPE).await.unwrap_err();
        assert_eq!(fake.calls(), 2);
        let text = err.to_string();
        assert!(text.contains("FakeCredential") && text.contains("still down"), "{text}");
        assert!(!text.contains(&token), "{text}");
    }

    #[tokio::test]
    async fn errors_name_the_credential() {
        let fake = FakeCredential::scripted(vec![Err("AADSTS700016: application not found")]);
        let err = EntraAuth::with_credential(fake).bearer_token(SCOPE).await.unwrap_err();
        match &err {
            EntraError::Credential {
                credential,
                scope,
                reason,
            } => {
                assert_eq!(credential, "FakeCredential");
                assert_eq!(scope, SCOPE);
                assert!(reason.contains("AADSTS700016"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn credential_names_come_from_debug_type_names() {
        let fake = FakeCredential::lasting(MIN);
        assert_eq!(credential_name(fake.as_ref()), "FakeCredential");
        let cli = AzureCliCredential::new(None).unwrap();
        assert_eq!(credential_name(cli.as_ref()), "AzureCliCredential");
    }

    #[test]
    fn scrubber_removes_secrets_and_jwts() {
        let scrubber = Scrubber {
            secrets: vec!["Abc~SuperSecretValue123".into()],
        };
        let jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2lnbmF0dXJl";
        let text = scrubber.clean(&format!("secret Abc~SuperSecretValue123 token={jwt} end; keyJoe stays"));
        assert_eq!(text, "secret [redacted] token=[redacted token] end; keyJoe stays");
        let long = "x".repeat(MAX_REASON_CHARS + 50);
        assert_eq!(scrubber.clean(&long).chars().count(), MAX_REASON_CHARS + 1);
    }

    #[test]
    fn chain_skips_unconfigured_steps_with_reasons() {
        let chain = Chain::from_lookup(&lookup(&[]));
        let states = states(&chain);
        let names: Vec<&str> = states.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [CLIENT_SECRET, WORKLOAD_IDENTITY, MANAGED_IDENTITY, DEVELOPER_TOOLS]
        );
        assert_eq!(
            states[0].1.as_deref(),
            Some("AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET not set")
        );
        assert_eq!(
            states[1].1.as_deref(),
            Some("AZURE_FEDERATED_TOKEN_FILE, AZURE_TENANT_ID, AZURE_CLIENT_ID not set")
        );
        // IMDS is possible anywhere; it is gated by the probe instead.
        assert_eq!(states[2].1, None);
        assert!(matches!(&chain.steps[2].state, StepState::Ready { probe: Some(_), .. }));
        // az/azd that are not installed fail at once ("az not found on PATH").
        assert_eq!(states[3].1, None);
    }

    #[test]
    fn chain_uses_configured_steps() {
        let dir = temp_dir("configured");
        let token_file = dir.join("federated-token");
        std::fs::write(&token_file, "service-account-token").unwrap();
        let chain = Chain::from_lookup(&lookup(&[
            ("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000001"),
            ("AZURE_CLIENT_ID", "client"),
            ("AZURE_CLIENT_SECRET", "a-client-secret-value"),
            ("AZURE_FEDERATED_TOKEN_FILE", token_file.to_str().unwrap()),
        ]));
        assert_eq!(
            ready(&chain),
            [CLIENT_SECRET, WORKLOAD_IDENTITY, MANAGED_IDENTITY, DEVELOPER_TOOLS]
        );
        assert_eq!(chain.scrubber.secrets, ["a-client-secret-value"]);
    }

    #[test]
    fn chain_reports_bad_configuration_as_skipped() {
        let chain = Chain::from_lookup(&lookup(&[
            ("AZURE_TENANT_ID", "not a tenant!"),
            ("AZURE_CLIENT_ID", "client"),
            ("AZURE_CLIENT_SECRET", "a-client-secret-value"),
        ]));
        let states = states(&chain);
        let secret = states[0].1.as_deref().unwrap();
        assert!(
            secret.starts_with("invalid configuration") && secret.contains("tenant"),
            "{secret}"
        );
        assert!(!secret.contains("a-client-secret-value"));
        let missing_file = Chain::from_lookup(&lookup(&[
            ("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000001"),
            ("AZURE_CLIENT_ID", "client"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent/entra-test-token"),
        ]));
        let workload = states_of(&missing_file, 1);
        assert!(workload.contains("failed to read federated token"), "{workload}");

        let cert_only = Chain::from_lookup(&lookup(&[("AZURE_CLIENT_CERTIFICATE_PATH", "/cert.pem")]));
        let reason = states_of(&cert_only, 0);
        assert!(reason.contains("certificate credentials are not built in"), "{reason}");
    }

    fn states_of(chain: &Chain, index: usize) -> String {
        states(chain)[index].1.clone().unwrap_or_default()
    }

    #[test]
    fn managed_identity_hosts() {
        let cloud_shell = Chain::from_lookup(&lookup(&[("MSI_ENDPOINT", "http://localhost:50342/oauth2/token")]));
        assert!(states_of(&cloud_shell, 2).contains("Cloud Shell"));
        let arc = Chain::from_lookup(&lookup(&[
            (
                "IDENTITY_ENDPOINT",
                "http://localhost:40342/metadata/identity/oauth2/token",
            ),
            ("IMDS_ENDPOINT", "http://localhost:40342"),
        ]));
        assert!(states_of(&arc, 2).contains("Azure Arc"));
        let app_service = Chain::from_lookup(&lookup(&[
            ("IDENTITY_ENDPOINT", "http://localhost:8081/msi/token"),
            ("IDENTITY_HEADER", "header"),
        ]));
        // App Service publishes its endpoint; no IMDS probe.
        assert!(matches!(
            &app_service.steps[2].state,
            StepState::Ready { probe: None, .. }
        ));
    }

    #[test]
    fn token_credentials_variable_selects_steps() {
        let dev = Chain::from_lookup(&lookup(&[("AZURE_TOKEN_CREDENTIALS", "dev")]));
        assert_eq!(ready(&dev), [DEVELOPER_TOOLS]);
        assert_eq!(states_of(&dev, 2), "excluded by AZURE_TOKEN_CREDENTIALS=dev");
        let prod = Chain::from_lookup(&lookup(&[("AZURE_TOKEN_CREDENTIALS", "prod")]));
        assert_eq!(ready(&prod), [MANAGED_IDENTITY]);
        let only = Chain::from_lookup(&lookup(&[("AZURE_TOKEN_CREDENTIALS", "AzureCliCredential")]));
        assert_eq!(ready(&only), [AZURE_CLI]);
        let azd = Chain::from_lookup(&lookup(&[("AZURE_TOKEN_CREDENTIALS", "azuredeveloperclicredential")]));
        assert_eq!(ready(&azd), [AZURE_DEVELOPER_CLI]);
        let bogus = Chain::from_lookup(&lookup(&[("AZURE_TOKEN_CREDENTIALS", "magic")]));
        assert!(ready(&bogus).is_empty());
        assert!(states_of(&bogus, 3).contains("AZURE_TOKEN_CREDENTIALS=magic"));
    }

    fn chain_of(steps: Vec<Step>) -> Chain {
        Chain {
            steps,
            scrubber: Scrubber {
                secrets: vec!["the-client-secret".into()],
            },
            chosen: OnceLock::new(),
        }
    }

    #[tokio::test]
    async fn chain_error_lists_every_step() {
        let failing = FakeCredential::scripted(vec![Err("leaked the-client-secret here")]);
        let chain = chain_of(vec![
            Step::skipped(CLIENT_SECRET, "AZURE_CLIENT_SECRET not set"),
            Step::ready(WORKLOAD_IDENTITY, failing, DIRECTORY_TIMEOUT, None),
            Step::skipped(AZURE_CLI, "`az` not found on PATH"),
        ]);
        let err = chain.get_token(SCOPE).await.unwrap_err();
        let EntraError::NoCredential { attempts, .. } = &err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(
            attempts,
            &[
                Attempt {
                    credential: CLIENT_SECRET.into(),
                    skipped: true,
                    reason: "AZURE_CLIENT_SECRET not set".into()
                },
                Attempt {
                    credential: WORKLOAD_IDENTITY.into(),
                    skipped: false,
                    reason: "leaked [redacted] here".into()
                },
                Attempt {
                    credential: AZURE_CLI.into(),
                    skipped: true,
                    reason: "`az` not found on PATH".into()
                },
            ]
        );
        let text = err.to_string();
        assert!(
            text.contains("WorkloadIdentityCredential failed (leaked [redacted] here)"),
            "{text}"
        );
        assert!(!text.contains("the-client-secret"));
    }

    #[tokio::test]
    async fn chain_sticks_to_the_first_working_step() {
        let broken = FakeCredential::scripted(vec![Err("no")]);
        let working = FakeCredential::lasting(60 * MIN);
        let chain = chain_of(vec![
            Step::ready(MANAGED_IDENTITY, broken.clone(), MANAGED_IDENTITY_TIMEOUT, None),
            Step::ready(DEVELOPER_TOOLS, working.clone(), DEVELOPER_TOOL_TIMEOUT, None),
        ]);
        assert_eq!(
            chain.get_token(SCOPE).await.unwrap().token.secret(),
            format!("tok-1-{SCOPE}")
        );
        assert_eq!(
            chain.get_token(OTHER_SCOPE).await.unwrap().token.secret(),
            format!("tok-2-{OTHER_SCOPE}")
        );
        assert_eq!((broken.calls(), working.calls()), (1, 2));
    }

    #[tokio::test]
    async fn empty_token_is_an_error() {
        #[derive(Debug)]
        struct Blank;
        #[async_trait::async_trait]
        impl TokenCredential for Blank {
            async fn get_token(
                &self,
                _: &[&str],
                _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
            ) -> azure_core::Result<AccessToken> {
                Ok(AccessToken::new(
                    "",
                    OffsetDateTime::now_utc() + Duration::from_secs(3600),
                ))
            }
        }
        let err = EntraAuth::with_credential(Arc::new(Blank))
            .bearer_token(SCOPE)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("Blank could not get a token for {SCOPE}: returned an empty token")
        );
    }

    /// One-shot HTTP server on loopback: returns the raw request and answers `response`.
    async fn serve_once(response: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token?x=1", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = socket.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= head_end + 4 + length || n == 0 {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            socket.write_all(response.as_bytes()).await.unwrap();
            socket.shutdown().await.unwrap();
            String::from_utf8_lossy(&buf).to_string()
        });
        (url, task)
    }

    #[tokio::test]
    async fn transport_sends_method_headers_body_and_reads_the_answer() {
        let (url, server) = serve_once(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 16\r\nconnection: close\r\n\r\n{\"access_token\"}",
        )
        .await;
        let mut request = Request::new(Url::parse(&url).unwrap(), Method::Post);
        request.insert_header("content-type", "application/x-www-form-urlencoded");
        request.set_body("grant_type=client_credentials");
        let transport = ReqwestTransport::new(true).unwrap();
        let response = transport.execute_request(&request).await.unwrap();
        assert_eq!(response.status(), StatusCode::Ok);
        assert_eq!(
            response
                .headers()
                .get_optional_str(&HeaderName::from_static("content-type")),
            Some("application/json")
        );
        assert_eq!(
            response.into_body().collect_string().await.unwrap(),
            "{\"access_token\"}"
        );
        let seen = server.await.unwrap();
        assert!(seen.starts_with("POST /token?x=1 HTTP/1.1"), "{seen}");
        assert!(
            seen.contains("content-type: application/x-www-form-urlencoded"),
            "{seen}"
        );
        assert!(seen.ends_with("grant_type=client_credentials"), "{seen}");
    }

    #[tokio::test]
    async fn imds_probe_accepts_any_answer_and_remembers_silence() {
        let (url, server) =
            serve_once("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
        let probe = ImdsProbe::new(&url).unwrap();
        assert_eq!(probe.check().await, Ok(()));
        assert!(server.await.unwrap().starts_with("GET /token"));

        // A port nobody listens on: bind, note the port, close.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let probe = ImdsProbe::new(&format!("http://{closed}/metadata")).unwrap();
        let reason = probe.check().await.unwrap_err();
        assert!(reason.contains("no IMDS endpoint answered"), "{reason}");
        assert!(!reason.contains("metadata"), "URL leaked: {reason}");
        assert!(probe.result.get().is_some());
    }
}
