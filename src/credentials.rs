//! Credentials, as InfraWallet defines them, turned into an AWS `SdkConfig` per integration.
//!
//! - a static key pair when both halves are given;
//! - when `assumed_role_name` is set, that identity (the static pair, or else the default chain)
//!   assumes `arn:aws:iam::<account_id>:role/<name>` through STS, with `external_id` when given;
//!   the SDK's identity cache renews the session before it expires;
//! - with neither, the default AWS credential chain.
//!
//! Every config comes from aws-config's loader, so the standard AWS environment variables
//! (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_COST_EXPLORER`, `AWS_ENDPOINT_URL_STS`, profiles, ...)
//! keep working.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{self, ProvideCredentials, future};
use aws_sdk_costexplorer::config::SharedInterceptor;

use crate::cost_explorer::CostExplorer;
use crate::failure::AwsError;
use crate::metrics::{Metrics, RequestCounter};
use crate::model::Integration;
use crate::organizations::Organizations;

/// How long an assumed-role session lasts (STS's default and the role's minimum maximum).
pub const ASSUMED_SESSION_DURATION: Duration = Duration::from_secs(3600);
/// Per-attempt timeout of an AWS request.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of a whole AWS operation, retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(180);

/// How long an AWS request may take: each attempt, and the whole operation with its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub attempt: Duration,
    pub operation: Duration,
}

impl Default for Timeouts {
    /// [`ATTEMPT_TIMEOUT`] and [`OPERATION_TIMEOUT`].
    fn default() -> Self {
        Self {
            attempt: ATTEMPT_TIMEOUT,
            operation: OPERATION_TIMEOUT,
        }
    }
}

/// Where an integration's identity comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// The configured key pair.
    Static,
    /// The default chain: environment, profile, web identity (IRSA), container, instance.
    DefaultChain,
    /// `base` assumes `role_arn`.
    AssumeRole {
        base: Box<CredentialSource>,
        role_arn: String,
        external_id: Option<String>,
    },
}

impl CredentialSource {
    /// The source InfraWallet's rules select for an integration.
    pub fn for_integration(integration: &Integration) -> Self {
        let base = if integration.static_credentials.is_some() {
            CredentialSource::Static
        } else {
            CredentialSource::DefaultChain
        };
        match integration.role_arn() {
            Some(role_arn) => CredentialSource::AssumeRole {
                base: Box::new(base),
                role_arn,
                external_id: integration.external_id.clone(),
            },
            None => base,
        }
    }

    /// A short description for logs (never a secret).
    pub fn describe(&self) -> String {
        match self {
            CredentialSource::Static => "static key pair".to_string(),
            CredentialSource::DefaultChain => "default credential chain".to_string(),
            CredentialSource::AssumeRole { base, role_arn, .. } => {
                format!("assume role {role_arn} from {}", base.describe())
            }
        }
    }
}

/// Builds the integration's `SdkConfig`, with the credentials its source selects.
pub async fn sdk_config(
    integration: &Integration,
    metrics: &Arc<Metrics>,
    timeouts: Timeouts,
) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(integration.region.clone()))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(timeouts.attempt)
                .operation_timeout(timeouts.operation)
                .build(),
        );
    if let Some(keys) = &integration.static_credentials {
        loader = loader.credentials_provider(Credentials::new(
            keys.access_key_id.clone(),
            keys.secret_access_key.expose().to_string(),
            None,
            None,
            "aws-cost-exporter-static",
        ));
    }
    let base = loader.load().await;
    let Some(role_arn) = integration.role_arn() else {
        return base;
    };
    let mut sts = aws_sdk_sts::config::Builder::from(&base).interceptor(RequestCounter::new(
        integration.name.clone(),
        metrics.clone(),
    ));
    if let Some(url) = &integration.sts_endpoint_url {
        sts = sts.endpoint_url(url.clone());
    }
    let provider = AssumeRoleProvider {
        sts: aws_sdk_sts::Client::from_conf(sts.build()),
        role_arn,
        external_id: integration.external_id.clone(),
        session_name: session_name(&integration.name),
    };
    base.to_builder()
        .credentials_provider(provider::SharedCredentialsProvider::new(provider))
        .build()
}

/// The AWS clients one integration uses.
#[derive(Debug, Clone)]
pub struct Clients {
    pub cost_explorer: CostExplorer,
    /// Present when the integration sets `organizations: true`.
    pub organizations: Option<Organizations>,
}

/// The integration's clients, each counting its requests, with the default timeouts.
pub async fn clients(integration: &Integration, metrics: &Arc<Metrics>) -> Clients {
    clients_with(integration, metrics, Timeouts::default(), None).await
}

/// The integration's clients, each counting its requests, with these SDK timeouts and
/// `cost_explorer_interceptor` (the daily request cap) on every Cost
/// Explorer request.
pub async fn clients_with(
    integration: &Integration,
    metrics: &Arc<Metrics>,
    timeouts: Timeouts,
    cost_explorer_interceptor: Option<SharedInterceptor>,
) -> Clients {
    let sdk = sdk_config(integration, metrics, timeouts).await;
    let counter = RequestCounter::new(integration.name.clone(), metrics.clone());
    let mut builder =
        aws_sdk_costexplorer::config::Builder::from(&sdk).interceptor(counter.clone());
    if let Some(interceptor) = cost_explorer_interceptor {
        builder.push_interceptor(interceptor);
    }
    if let Some(url) = &integration.endpoint_url {
        builder = builder.endpoint_url(url.clone());
    }
    let organizations = integration.organizations.then(|| {
        let mut builder = aws_sdk_organizations::config::Builder::from(&sdk).interceptor(counter);
        if let Some(url) = &integration.organizations_endpoint_url {
            builder = builder.endpoint_url(url.clone());
        }
        Organizations::new(aws_sdk_organizations::Client::from_conf(builder.build()))
    });
    Clients {
        cost_explorer: CostExplorer::new(aws_sdk_costexplorer::Client::from_conf(builder.build())),
        organizations,
    }
}

/// The integration's Cost Explorer client, counting its requests.
pub async fn cost_explorer(integration: &Integration, metrics: &Arc<Metrics>) -> CostExplorer {
    clients(integration, metrics).await.cost_explorer
}

/// A role session name STS accepts (`[\w+=,.@-]{2,64}`) naming the exporter and integration.
pub fn session_name(integration: &str) -> String {
    let cleaned: String = integration
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+=,.@-_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut name = format!("aws-cost-exporter-{cleaned}");
    name.truncate(64);
    name
}

/// Assumes a role through STS; the SDK's identity cache calls it again before expiry.
#[derive(Debug)]
struct AssumeRoleProvider {
    sts: aws_sdk_sts::Client,
    role_arn: String,
    external_id: Option<String>,
    session_name: String,
}

impl AssumeRoleProvider {
    async fn assume(&self) -> provider::Result {
        let output = self
            .sts
            .assume_role()
            .role_arn(&self.role_arn)
            .role_session_name(&self.session_name)
            .set_external_id(self.external_id.clone())
            .duration_seconds(ASSUMED_SESSION_DURATION.as_secs() as i32)
            .send()
            .await
            // AWS's own words, no secret: the error names the role, not the keys.
            .map_err(|err| {
                CredentialsError::provider_error(AwsError::from_sdk("AssumeRole", &err))
            })?;
        let credentials = output.credentials().ok_or_else(|| {
            CredentialsError::provider_error(format!(
                "STS returned no credentials for role {}",
                self.role_arn
            ))
        })?;
        let expiry = SystemTime::try_from(*credentials.expiration()).map_err(|_| {
            CredentialsError::provider_error(format!(
                "STS returned an invalid expiry for role {}",
                self.role_arn
            ))
        })?;
        Ok(Credentials::new(
            credentials.access_key_id(),
            credentials.secret_access_key(),
            Some(credentials.session_token().to_string()),
            Some(expiry),
            "aws-cost-exporter-assume-role",
        ))
    }
}

impl ProvideCredentials for AssumeRoleProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.assume())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Secret, StaticCredentials};

    fn integration() -> Integration {
        Integration::new("payer", "123456789012")
    }

    #[test]
    fn selection_follows_infrawallet() {
        let mut i = integration();
        assert_eq!(
            CredentialSource::for_integration(&i),
            CredentialSource::DefaultChain
        );

        i.static_credentials = Some(StaticCredentials {
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: Secret::new("very-secret"),
        });
        assert_eq!(
            CredentialSource::for_integration(&i),
            CredentialSource::Static
        );

        i.assumed_role_name = Some("CostExporter".into());
        i.external_id = Some("ext".into());
        let source = CredentialSource::for_integration(&i);
        assert_eq!(
            source,
            CredentialSource::AssumeRole {
                base: Box::new(CredentialSource::Static),
                role_arn: "arn:aws:iam::123456789012:role/CostExporter".into(),
                external_id: Some("ext".into()),
            }
        );
        assert_eq!(
            source.describe(),
            "assume role arn:aws:iam::123456789012:role/CostExporter from static key pair"
        );

        i.static_credentials = None;
        assert_eq!(
            CredentialSource::for_integration(&i),
            CredentialSource::AssumeRole {
                base: Box::new(CredentialSource::DefaultChain),
                role_arn: "arn:aws:iam::123456789012:role/CostExporter".into(),
                external_id: Some("ext".into()),
            }
        );
    }

    #[test]
    fn secrets_never_print() {
        let keys = StaticCredentials {
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: Secret::new("very-secret"),
        };
        let mut i = integration();
        i.static_credentials = Some(keys);
        let debug = format!("{i:?}");
        assert!(debug.contains("AKIAEXAMPLE"));
        assert!(!debug.contains("very-secret"), "{debug}");
    }

    #[test]
    fn session_names_are_valid() {
        assert_eq!(session_name("payer"), "aws-cost-exporter-payer");
        assert_eq!(session_name("team a/b"), "aws-cost-exporter-team-a-b");
        assert_eq!(session_name(&"x".repeat(100)).len(), 64);
    }
}
