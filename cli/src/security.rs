//! Command-line settings of the public edge (keys, TLS, limits) and `martix token issue`.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use martix_engine::edge::auth::{self, AuthConfig, KeySource, Role, SigningKey, TokenRequest};
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
    /// The issuer (`iss`) tokens must carry.
    #[arg(long, env = "MARTIX_AUTH_ISSUER", default_value = auth::DEFAULT_ISSUER)]
    auth_issuer: String,
    /// The audience (`aud`) tokens must carry.
    #[arg(long, env = "MARTIX_AUTH_AUDIENCE", default_value = auth::DEFAULT_AUDIENCE)]
    auth_audience: String,
    /// Serve without authentication: anyone who reaches the ports may do anything.
    #[arg(long)]
    insecure: bool,
}

impl AuthArgs {
    /// The authentication to run with, or why the server must not start.
    pub(crate) fn config(&self) -> Result<Option<AuthConfig>> {
        let keys = match (&self.auth_secret, &self.auth_public_key, &self.auth_jwks) {
            (Some(s), None, None) => KeySource::Secret(s.as_bytes().to_vec()),
            (None, Some(p), None) => KeySource::PublicKeyPem(p.clone()),
            (None, None, Some(p)) => KeySource::Jwks(p.clone()),
            (None, None, None) if self.insecure => return Ok(None),
            (None, None, None) => bail!(
                "no token key: give --auth-secret (MARTIX_AUTH_SECRET), --auth-public-key or \
                 --auth-jwks, or --insecure to serve without authentication"
            ),
            _ => bail!("give only one of --auth-secret, --auth-public-key and --auth-jwks"),
        };
        if self.insecure {
            bail!("--insecure and a token key contradict each other: give one");
        }
        Ok(Some(AuthConfig {
            keys,
            issuer: self.auth_issuer.clone(),
            audience: self.auth_audience.clone(),
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
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Who the token names (rate limits are per subject); default: the first role and a
    /// random suffix, so that tokens issued apart are limited apart.
    #[arg(long)]
    subject: Option<String>,
    /// HS256 secret to sign with.
    #[arg(long, env = "MARTIX_AUTH_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// RSA or EC private key (PEM file) to sign with (RS256/ES256).
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
        (Some(s), None) => {
            if s.len() < 32 {
                bail!("the secret is {} bytes; use at least 32", s.len());
            }
            SigningKey::Secret(s.as_bytes().to_vec())
        }
        (None, Some(p)) => SigningKey::PrivateKeyPem {
            pem: std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
            kid: a.kid.clone(),
        },
        _ => bail!("give --secret (MARTIX_AUTH_SECRET) or --private-key"),
    };
    let subject = a.subject.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            a.roles[0].as_str(),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        )
    });
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
