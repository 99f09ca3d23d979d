//! Command-line settings of the public edge (keys, TLS, limits) and `martix token issue`.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use martix_engine::edge::auth::{
    self, AuthConfig, ClaimMapping, KeySource, RemoteJwks, Role, SigningKey, TokenRequest,
};
use martix_engine::edge::tls::TlsFiles;
use martix_engine::edge::{LimitsConfig, Rate};
use std::path::PathBuf;
use std::time::Duration;

/// How `martix server` checks bearer tokens. One key source is required unless `--insecure`.
#[derive(Args)]
pub(crate) struct AuthArgs {
    /// HS256 shared secret that signs and verifies tokens (at least 32 bytes).
    #[arg(long, env = "MARTIX_AUTH_SECRET", hide_env_values = true)]
    auth_secret: Option<String>,
    /// RS256/ES256 public key (PEM file) that verifies tokens.
    #[arg(long, env = "MARTIX_AUTH_PUBLIC_KEY")]
    auth_public_key: Option<PathBuf>,
    /// JWKS file whose keys (by `kid`) verify tokens.
    #[arg(long, env = "MARTIX_AUTH_JWKS")]
    auth_jwks: Option<PathBuf>,
    /// An identity provider's JWKS URL (https; its `jwks_uri`): keys cached, refetched when
    /// a token names an unknown `kid` (at most every 30 s) and hourly.
    #[arg(long, env = "MARTIX_AUTH_JWKS_URL")]
    auth_jwks_url: Option<String>,
    /// The issuer (`iss`) tokens must carry.
    #[arg(long, env = "MARTIX_AUTH_ISSUER", default_value = auth::DEFAULT_ISSUER)]
    auth_issuer: String,
    /// The audience tokens must carry (`aud`: this string, or an array holding it).
    #[arg(long, env = "MARTIX_AUTH_AUDIENCE", default_value = auth::DEFAULT_AUDIENCE)]
    auth_audience: String,
    /// The longest a token may live, from `iat` to `exp` (0s: no limit).
    #[arg(long, env = "MARTIX_AUTH_MAX_TOKEN_LIFETIME", default_value = "24h", value_parser = humantime::parse_duration)]
    auth_max_token_lifetime: Duration,
    /// The claim holding the token's roles: a name or a dotted path (`realm_access.roles`).
    /// Names other than client, worker, operator and admin are ignored.
    #[arg(long, env = "MARTIX_AUTH_ROLES_CLAIM", default_value = "roles")]
    auth_roles_claim: String,
    /// The claim holding the namespaces those roles apply to (`*`: all).
    #[arg(
        long,
        env = "MARTIX_AUTH_NAMESPACES_CLAIM",
        default_value = "namespaces"
    )]
    auth_namespaces_claim: String,
    /// A claim holding roles per namespace, an object such as
    /// `{"orders-eu": ["operator"], "orders-us": ["client"]}` (default: none).
    #[arg(long, env = "MARTIX_AUTH_NAMESPACE_ROLES_CLAIM")]
    auth_namespace_roles_claim: Option<String>,
    /// Serve without authentication: anyone who reaches the ports may do anything.
    #[arg(long)]
    insecure: bool,
}

impl AuthArgs {
    /// The authentication to run with, or why the server must not start.
    pub(crate) fn config(&self) -> Result<Option<AuthConfig>> {
        let keys = match (
            &self.auth_secret,
            &self.auth_public_key,
            &self.auth_jwks,
            &self.auth_jwks_url,
        ) {
            (Some(s), None, None, None) => KeySource::Secret(s.as_bytes().to_vec()),
            (None, Some(p), None, None) => KeySource::PublicKeyPem(p.clone()),
            (None, None, Some(p), None) => KeySource::Jwks(p.clone()),
            (None, None, None, Some(u)) => KeySource::JwksUrl(RemoteJwks::new(u.clone())),
            (None, None, None, None) if self.insecure => return Ok(None),
            (None, None, None, None) => bail!(
                "no token key: give --auth-secret (MARTIX_AUTH_SECRET), --auth-public-key, \
                 --auth-jwks or --auth-jwks-url, or --insecure to serve without authentication"
            ),
            _ => bail!(
                "give only one of --auth-secret, --auth-public-key, --auth-jwks and \
                 --auth-jwks-url"
            ),
        };
        if self.insecure {
            bail!("--insecure and a token key contradict each other: give one");
        }
        Ok(Some(AuthConfig {
            keys,
            issuer: self.auth_issuer.clone(),
            audience: self.auth_audience.clone(),
            max_token_lifetime: self.auth_max_token_lifetime,
            claims: ClaimMapping {
                roles: self.auth_roles_claim.clone(),
                namespaces: self.auth_namespaces_claim.clone(),
                namespace_roles: self.auth_namespace_roles_claim.clone(),
            },
        }))
    }
}

/// TLS and fair-use limits of both ports.
#[derive(Args)]
pub(crate) struct EdgeArgs {
    /// PEM certificate chain for TLS on both ports (with --tls-key).
    #[arg(long, env = "MARTIX_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on both ports (with --tls-cert).
    #[arg(long, env = "MARTIX_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Requests per second of one identity, long polls aside (PER_SEC or PER_SEC/BURST; 0: no limit).
    #[arg(long, env = "MARTIX_RATE_LIMIT", default_value = "5000")]
    rate_limit: Rate,
    /// Workflow starts per second of one identity.
    #[arg(long, env = "MARTIX_START_RATE_LIMIT", default_value = "2000")]
    start_rate_limit: Rate,
    /// Workflow starts per second into one namespace.
    #[arg(
        long,
        env = "MARTIX_NAMESPACE_START_RATE_LIMIT",
        default_value = "10000"
    )]
    namespace_start_rate_limit: Rate,
    /// Long polls one identity may hold open at once (0: no limit).
    #[arg(long, env = "MARTIX_MAX_POLLS_PER_IDENTITY", default_value_t = 1000)]
    max_polls_per_identity: usize,
    /// Deadline of requests that do not wait by design (0s: none).
    #[arg(long, env = "MARTIX_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// Failed authentications per second from one address; past it the address is refused for
    /// a while without its tokens being verified (PER_SEC/BURST; 0: no limit).
    #[arg(long, env = "MARTIX_FAILED_AUTH_RATE_LIMIT", default_value = "10/50")]
    failed_auth_rate_limit: Rate,
    /// Connections each port (gRPC, HTTP) holds at once; more are closed as accepted (0: no cap).
    #[arg(long, env = "MARTIX_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// Concurrent calls on one gRPC connection (HTTP/2 streams).
    #[arg(long, env = "MARTIX_MAX_STREAMS_PER_CONNECTION", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_streams_per_connection: u32,
}

impl EdgeArgs {
    pub(crate) fn limits(&self) -> LimitsConfig {
        LimitsConfig {
            requests_per_identity: self.rate_limit,
            starts_per_identity: self.start_rate_limit,
            starts_per_namespace: self.namespace_start_rate_limit,
            max_polls_per_identity: self.max_polls_per_identity,
            request_timeout: self.request_timeout,
            failed_auth_per_peer: self.failed_auth_rate_limit,
            max_connections: self.max_connections,
            max_streams_per_connection: self.max_streams_per_connection,
        }
    }

    pub(crate) fn tls(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
        })
    }
}

/// A worker that holds the engine's HS256 secret signs its own tokens (role worker, its
/// namespace, an hour each, a new one every half hour) when no `--token` is given: a worker
/// that runs for months needs no token handed to it and never sends an expired one.
#[derive(Args)]
pub(crate) struct WorkerSigning {
    /// The engine's HS256 secret: with it and no --token, the worker signs its own tokens.
    #[arg(
        long = "auth-secret",
        env = "MARTIX_AUTH_SECRET",
        hide_env_values = true
    )]
    secret: Option<String>,
    /// The issuer (`iss`) of those tokens.
    #[arg(long = "auth-issuer", env = "MARTIX_AUTH_ISSUER", default_value = auth::DEFAULT_ISSUER)]
    issuer: String,
    /// The audience (`aud`) of those tokens.
    #[arg(long = "auth-audience", env = "MARTIX_AUTH_AUDIENCE", default_value = auth::DEFAULT_AUDIENCE)]
    audience: String,
}

impl WorkerSigning {
    /// `options`, minting worker tokens for `namespace` when a secret is given.
    pub(crate) fn apply(
        &self,
        options: martix_sdk::ConnectOptions,
        namespace: &str,
    ) -> Result<martix_sdk::ConnectOptions> {
        let Some(secret) = self.secret.as_deref().filter(|s| !s.is_empty()) else {
            return Ok(options);
        };
        let key = secret_key(secret)?;
        let request = TokenRequest {
            subject: random_subject(Role::Worker),
            roles: vec![Role::Worker],
            namespaces: vec![namespace.to_owned()],
            ttl: Duration::from_secs(3600),
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
        };
        Ok(options.token_from(
            move || auth::issue(&key, &request),
            Duration::from_secs(1800),
        ))
    }
}

/// An HS256 signing key, refused under 32 bytes.
fn secret_key(secret: &str) -> Result<SigningKey> {
    if secret.len() < 32 {
        bail!("the secret is {} bytes; use at least 32", secret.len());
    }
    Ok(SigningKey::Secret(secret.as_bytes().to_vec()))
}

/// A subject for tokens issued apart, so that rate limits (per subject) keep them apart:
/// the role and a random suffix.
fn random_subject(role: Role) -> String {
    format!(
        "{}-{}",
        role.as_str(),
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

#[derive(Subcommand)]
pub(crate) enum TokenCmd {
    /// Sign a bearer token and print it.
    Issue(IssueArgs),
}

#[derive(Args)]
pub(crate) struct IssueArgs {
    /// A role the token grants: client, worker, operator or admin (repeatable).
    #[arg(long = "role", required = true)]
    roles: Vec<Role>,
    /// A namespace the token may touch, `*` for all (repeatable).
    #[arg(long = "namespace", default_value = "default")]
    namespaces: Vec<String>,
    /// How long the token is valid (servers refuse longer than their
    /// --auth-max-token-lifetime, 24h by default).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Who the token names (rate limits are per subject); default: the first role and a
    /// random suffix, so that tokens issued apart are limited apart.
    #[arg(long)]
    subject: Option<String>,
    /// HS256 secret to sign with.
    #[arg(long, env = "MARTIX_AUTH_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// EC P-256 private key (PEM file) to sign with (ES256). RSA keys are refused: the RSA
    /// implementation's signing is open to a timing attack (RUSTSEC-2023-0071).
    #[arg(long, conflicts_with = "secret")]
    private_key: Option<PathBuf>,
    /// Key id for the header, to pick a key from the engine's JWKS.
    #[arg(long)]
    kid: Option<String>,
    #[arg(long, env = "MARTIX_AUTH_ISSUER", default_value = auth::DEFAULT_ISSUER)]
    issuer: String,
    #[arg(long, env = "MARTIX_AUTH_AUDIENCE", default_value = auth::DEFAULT_AUDIENCE)]
    audience: String,
}

pub(crate) fn token(cmd: TokenCmd) -> Result<()> {
    let TokenCmd::Issue(a) = cmd;
    let key = match (&a.secret, &a.private_key) {
        (Some(s), None) => secret_key(s)?,
        (None, Some(p)) => SigningKey::PrivateKeyPem {
            pem: std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
            kid: a.kid.clone(),
        },
        _ => bail!("give --secret (MARTIX_AUTH_SECRET) or --private-key"),
    };
    let subject = a
        .subject
        .clone()
        .unwrap_or_else(|| random_subject(a.roles[0]));
    let token = auth::issue(
        &key,
        &TokenRequest {
            subject,
            roles: a.roles.clone(),
            namespaces: a.namespaces.clone(),
            ttl: a.ttl,
            issuer: a.issuer.clone(),
            audience: a.audience.clone(),
        },
    )
    .map_err(anyhow::Error::msg)?;
    println!("{token}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Server {
        #[command(flatten)]
        auth: AuthArgs,
    }

    fn config(args: &[&str]) -> Result<Option<AuthConfig>> {
        let parsed = Server::try_parse_from(std::iter::once("server").chain(args.iter().copied()))?;
        parsed.auth.config()
    }

    #[test]
    fn an_identity_provider_is_configured_by_flags() {
        let c = config(&[
            "--auth-jwks-url",
            "https://idp.example/realms/martix/protocol/openid-connect/certs",
            "--auth-roles-claim",
            "realm_access.roles",
            "--auth-namespace-roles-claim",
            "martix_namespaces",
            "--auth-max-token-lifetime",
            "1h",
        ])
        .unwrap()
        .unwrap();
        assert!(matches!(&c.keys, KeySource::JwksUrl(r) if r.url.ends_with("/certs")));
        assert_eq!(c.claims.roles, "realm_access.roles");
        assert_eq!(c.claims.namespaces, "namespaces");
        assert_eq!(
            c.claims.namespace_roles.as_deref(),
            Some("martix_namespaces")
        );
        assert_eq!(c.max_token_lifetime, Duration::from_secs(3600));
        let defaults = config(&["--auth-jwks", "jwks.json"]).unwrap().unwrap();
        assert_eq!(
            defaults.max_token_lifetime,
            auth::DEFAULT_MAX_TOKEN_LIFETIME
        );
        assert_eq!(defaults.claims, ClaimMapping::default());
        let e = config(&[
            "--auth-jwks",
            "a.json",
            "--auth-jwks-url",
            "https://idp/jwks",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("only one of"), "{e}");
    }
}
