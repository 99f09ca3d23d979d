//! Who is calling, and what they may do: JWT bearer tokens, roles and namespaces.
//!
//! A token's claims name a subject, its roles and the namespaces it may touch (`*`: all),
//! and may grant roles per namespace; which claims hold them is configurable
//! ([`ClaimMapping`]), so that an identity provider's tokens serve as they are.
//! Keys: an HS256 shared secret, or RS256/ES256 public keys as a PEM file, a JWKS file or a
//! JWKS URL (the token's `kid` picks the key). Issuer and audience (a string or an array) are
//! always checked, expiry with a small leeway, and a token may not live longer than
//! configured.

mod claims;
mod jwks;
mod keys;

pub use claims::ClaimMapping;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use jwks::Remote;
pub use jwks::RemoteJwks;
use keys::{KeySet, key_set, pick, public_pem, read};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 10;
/// The audience Martix tokens carry unless configured otherwise.
pub const DEFAULT_AUDIENCE: &str = "martix";
/// The issuer Martix tokens carry unless configured otherwise.
pub const DEFAULT_ISSUER: &str = "martix";
/// The longest a token may live unless configured otherwise.
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A role a token grants. Each role is a fixed set of operations (see [`Op::allowed_for`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Services that start and follow workflows: start, describe, result, signal.
    Client,
    /// Workers: poll and answer tasks, read histories (for cache misses).
    Worker,
    /// Operators: everything the `martix` CLI does to workflows.
    Operator,
    /// Administrators: everything, including namespaces.
    Admin,
}

impl Role {
    /// All roles, for tables and tests.
    pub const ALL: [Role; 4] = [Role::Client, Role::Worker, Role::Operator, Role::Admin];

    /// The role's name as tokens spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Worker => "worker",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role '{s}' (client, worker, operator or admin)"))
    }
}

/// One guarded operation of the API (gRPC or HTTP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    StartWorkflow,
    DescribeWorkflow,
    GetWorkflowResult,
    SignalWorkflow,
    /// Asking a run's query handler (writes nothing).
    QueryWorkflow,
    /// Asking a run's update handler to change it (and waiting for its result).
    UpdateWorkflow,
    ListWorkflows,
    GetWorkflowHistory,
    CancelWorkflow,
    TerminateWorkflow,
    ResetWorkflow,
    /// Pausing and resuming a run.
    PauseWorkflow,
    /// Holding a circuit breaker open or closed by hand.
    ManageBreakers,
    /// Creating, pausing, resuming, triggering, backfilling and deleting schedules.
    ManageSchedules,
    /// Reading the breakers of a namespace.
    ListBreakers,
    RetryActivity,
    PollWorkflowTask,
    RespondWorkflowTask,
    PollActivityTask,
    RespondActivityTask,
    RecordActivityHeartbeat,
    /// A worker reporting its circuit breakers' states.
    ReportBreakers,
    ManageNamespaces,
    /// Reading engine-wide state that belongs to no namespace (metrics).
    ReadMetrics,
    /// Reading a read model a domain keeps (its queries).
    QueryReadModel,
    /// Reading the outbox (status, tail).
    ReadEvents,
    /// Rebuilding the read models.
    RebuildReadModel,
}

impl Op {
    /// Every operation, for tables and tests.
    pub const ALL: [Op; 27] = [
        Op::StartWorkflow,
        Op::DescribeWorkflow,
        Op::GetWorkflowResult,
        Op::SignalWorkflow,
        Op::QueryWorkflow,
        Op::UpdateWorkflow,
        Op::ListWorkflows,
        Op::GetWorkflowHistory,
        Op::CancelWorkflow,
        Op::TerminateWorkflow,
        Op::ResetWorkflow,
        Op::PauseWorkflow,
        Op::ManageBreakers,
        Op::ManageSchedules,
        Op::ListBreakers,
        Op::RetryActivity,
        Op::PollWorkflowTask,
        Op::RespondWorkflowTask,
        Op::PollActivityTask,
        Op::RespondActivityTask,
        Op::RecordActivityHeartbeat,
        Op::ReportBreakers,
        Op::ManageNamespaces,
        Op::ReadMetrics,
        Op::QueryReadModel,
        Op::ReadEvents,
        Op::RebuildReadModel,
    ];

    /// Whether `role` may perform this operation. The one permission table.
    pub fn allowed_for(self, role: Role) -> bool {
        use Op::*;
        match role {
            Role::Admin => true,
            Role::Client => matches!(
                self,
                StartWorkflow
                    | DescribeWorkflow
                    | GetWorkflowResult
                    | SignalWorkflow
                    | QueryWorkflow
                    | UpdateWorkflow
                    | QueryReadModel
            ),
            Role::Worker => matches!(
                self,
                PollWorkflowTask
                    | RespondWorkflowTask
                    | PollActivityTask
                    | RespondActivityTask
                    | RecordActivityHeartbeat
                    | ReportBreakers
                    | GetWorkflowHistory
            ),
            Role::Operator => matches!(
                self,
                StartWorkflow
                    | DescribeWorkflow
                    | GetWorkflowResult
                    | SignalWorkflow
                    | QueryWorkflow
                    | UpdateWorkflow
                    | ListWorkflows
                    | GetWorkflowHistory
                    | CancelWorkflow
                    | TerminateWorkflow
                    | ResetWorkflow
                    | PauseWorkflow
                    | ManageBreakers
                    | ManageSchedules
                    | ListBreakers
                    | RetryActivity
                    | ReadMetrics
                    | QueryReadModel
                    | ReadEvents
            ),
        }
    }

    /// Operations that wait by design run without the request deadline.
    pub fn waits(self) -> bool {
        self.is_long_poll() || matches!(self, Op::GetWorkflowResult | Op::UpdateWorkflow)
    }

    /// Long polls wait by design: they are not counted by the request rate limit.
    pub fn is_long_poll(self) -> bool {
        matches!(self, Op::PollWorkflowTask | Op::PollActivityTask)
    }
}

/// The claims of a token `martix token issue` signs. Tokens from an identity provider may
/// carry their roles and namespaces elsewhere (see [`ClaimMapping`]) and an `aud` array.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Who the caller is (rate limits are per subject).
    pub sub: String,
    pub roles: Vec<Role>,
    /// Namespaces the token may touch; `*` means all.
    pub namespaces: Vec<String>,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    /// Roles held in every namespace of `namespaces`.
    pub roles: Vec<Role>,
    /// `None`: every namespace.
    pub namespaces: Option<Vec<String>>,
    /// Roles held in one namespace only (`*`: in all), from a namespace-roles claim.
    pub namespace_roles: HashMap<String, Vec<Role>>,
}

impl Principal {
    /// The caller when authentication is off (`martix dev`): everything is allowed; rate
    /// limits key on `subject` (the peer address).
    pub fn unauthenticated(subject: String) -> Self {
        Self {
            subject,
            roles: vec![Role::Admin],
            namespaces: None,
            namespace_roles: HashMap::new(),
        }
    }

    /// The roles held in `namespace`: the token-wide roles if the namespace is granted, and
    /// the roles granted in that namespace alone.
    pub fn roles_in(&self, namespace: &str) -> Vec<Role> {
        let granted = match &self.namespaces {
            None => true,
            Some(list) => list.iter().any(|n| n == namespace),
        };
        let mut roles: Vec<Role> = if granted {
            self.roles.clone()
        } else {
            Vec::new()
        };
        for key in [namespace, "*"] {
            for r in self.namespace_roles.get(key).into_iter().flatten() {
                if !roles.contains(r) {
                    roles.push(*r);
                }
            }
        }
        roles
    }

    /// Allows `op` on `namespace` (empty = `default`; `*`: engine-wide, such as metrics), or
    /// says why not.
    pub fn authorize(&self, op: Op, namespace: &str) -> Result<(), Denied> {
        let namespace = if namespace.is_empty() {
            "default"
        } else {
            namespace
        };
        let roles = self.roles_in(namespace);
        if roles.iter().any(|r| op.allowed_for(*r)) {
            return Ok(());
        }
        if roles.is_empty() {
            return Err(Denied::Namespace(namespace.to_owned()));
        }
        Err(Denied::Role {
            op,
            roles: roles.iter().map(|r| r.as_str()).collect(),
            namespace: namespace.to_owned(),
        })
    }
}

/// Why an authenticated caller may not do something (PERMISSION_DENIED).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Denied {
    #[error("permission denied: {op:?} needs another role than {} in namespace '{namespace}'", roles.join(", "))]
    Role {
        op: Op,
        roles: Vec<&'static str>,
        namespace: String,
    },
    #[error("permission denied: the token does not grant namespace '{0}'")]
    Namespace(String),
}

/// Why a request carries no valid identity (UNAUTHENTICATED). The text never repeats the
/// token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unauthenticated {
    #[error("missing credentials: send 'authorization: Bearer <token>'")]
    Missing,
    #[error("malformed authorization header: expected 'Bearer <token>'")]
    Malformed,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Where the verification keys come from.
#[derive(Clone)]
pub enum KeySource {
    /// HS256 with a shared secret.
    Secret(Vec<u8>),
    /// RS256 or ES256 with one public key, a PEM file.
    PublicKeyPem(std::path::PathBuf),
    /// RS256 or ES256 keys from a JWKS file (chosen by the token's `kid`).
    Jwks(std::path::PathBuf),
    /// RS256 or ES256 keys from an identity provider's JWKS URL, cached and refetched on an
    /// unknown `kid` (key rotation).
    JwksUrl(RemoteJwks),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Never the secret itself.
            KeySource::Secret(_) => f.write_str("Secret(<redacted>)"),
            KeySource::PublicKeyPem(p) => f.debug_tuple("PublicKeyPem").field(p).finish(),
            KeySource::Jwks(p) => f.debug_tuple("Jwks").field(p).finish(),
            KeySource::JwksUrl(r) => f.debug_tuple("JwksUrl").field(&r.url).finish(),
        }
    }
}

/// How tokens are checked.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub keys: KeySource,
    pub issuer: String,
    /// Accepted when `aud` is this string or an array holding it.
    pub audience: String,
    /// The longest a token may live, from `iat` (or now, if later or absent) to `exp`; zero:
    /// no limit.
    pub max_token_lifetime: Duration,
    pub claims: ClaimMapping,
}

impl AuthConfig {
    /// Keys from `keys`, the default issuer, audience, lifetime and claims.
    pub fn new(keys: KeySource) -> Self {
        Self {
            keys,
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            max_token_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
            claims: ClaimMapping::default(),
        }
    }

    /// HS256 with `secret`, the default issuer and audience.
    pub fn hs256(secret: impl Into<Vec<u8>>) -> Self {
        Self::new(KeySource::Secret(secret.into()))
    }
}

enum Keys {
    Fixed(KeySet),
    Remote(Arc<Remote>),
}

/// Checks bearer tokens against configured keys.
pub struct Authenticator {
    keys: Keys,
    issuer: String,
    audience: String,
    max_lifetime: Duration,
    claims: ClaimMapping,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Authenticator");
        match &self.keys {
            Keys::Fixed(k) => d.field("keys", &k.len()),
            Keys::Remote(r) => d.field("keys", r),
        };
        d.field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("max_lifetime", &self.max_lifetime)
            .field("claims", &self.claims)
            .finish()
    }
}

impl Authenticator {
    /// Loads the keys; a missing or unreadable key is an error naming the file. A JWKS URL is
    /// checked here and fetched in the background (from a tokio runtime); tokens are refused
    /// as signed with an unknown key until its keys are in.
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
        let mut keys = KeySet::new();
        let keys = match &config.keys {
            KeySource::Secret(s) => {
                if s.len() < 32 {
                    return Err(format!(
                        "the HS256 secret is {} bytes; use at least 32",
                        s.len()
                    ));
                }
                keys.insert(None, (DecodingKey::from_secret(s), Algorithm::HS256));
                Keys::Fixed(keys)
            }
            KeySource::PublicKeyPem(path) => {
                keys.insert(None, public_pem(&read(path)?, path)?);
                Keys::Fixed(keys)
            }
            KeySource::Jwks(path) => {
                Keys::Fixed(key_set(&read(path)?, &path.display().to_string())?)
            }
            KeySource::JwksUrl(remote) => {
                let remote = Arc::new(Remote::new(remote)?);
                // Early, so that a wrong URL shows in the log at start rather than at the
                // first caller.
                remote.refresh_if_stale();
                Keys::Remote(remote)
            }
        };
        config.claims.check()?;
        Ok(Self {
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            max_lifetime: config.max_token_lifetime,
            claims: config.claims.clone(),
        })
    }

    /// How many times the JWKS URL was fetched (zero without one).
    pub fn jwks_fetches(&self) -> u64 {
        match &self.keys {
            Keys::Fixed(_) => 0,
            Keys::Remote(r) => r.fetches(),
        }
    }

    /// Verifies the value of an `authorization` header, without waiting: a JWKS URL's keys
    /// are cached and refetched in the background (see [`RemoteJwks`]).
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Principal, Unauthenticated> {
        let header = header.ok_or(Unauthenticated::Missing)?;
        let header = std::str::from_utf8(header).map_err(|_| Unauthenticated::Malformed)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Unauthenticated::Malformed)?;
        let head = jsonwebtoken::decode_header(token)
            .map_err(|_| Unauthenticated::Invalid("not a JWT".into()))?;
        let claims = match &self.keys {
            Keys::Fixed(keys) => self.verify(token, pick(keys, &head.kid))?,
            Keys::Remote(remote) => {
                remote.refresh_if_stale();
                let keys = remote.keys();
                let key = pick(&keys, &head.kid);
                if key.is_none() && remote.refetch_for(&head.kid) {
                    return Err(Unauthenticated::Invalid(
                        "signed with an unknown key; the identity provider's keys are being \
                         fetched again: retry in a few seconds"
                            .into(),
                    ));
                }
                self.verify(token, key)?
            }
        };
        claims::principal(&self.claims, claims)
    }

    /// Checks the signature, issuer, audience, times and lifetime; the claims.
    fn verify(
        &self,
        token: &str,
        key: Option<&(DecodingKey, Algorithm)>,
    ) -> Result<Map<String, Value>, Unauthenticated> {
        let invalid = |why: String| Unauthenticated::Invalid(why);
        let (key, alg) = key.ok_or_else(|| invalid("signed with an unknown key".into()))?;
        let mut v = Validation::new(*alg);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        // A string or an array of strings (Keycloak, Auth0, Okta): it must hold ours.
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            invalid(match e.kind() {
                K::ExpiredSignature => "expired".into(),
                K::InvalidSignature => "bad signature".into(),
                K::InvalidAudience => "wrong audience".into(),
                K::InvalidIssuer => "wrong issuer".into(),
                K::ImmatureSignature => "not valid yet".into(),
                K::InvalidAlgorithm => "wrong algorithm".into(),
                K::MissingRequiredClaim(c) => format!("has no '{c}' claim"),
                K::InvalidClaimFormat(c) => format!("claim '{c}' is malformed"),
                K::Json(_) => "claims are malformed".into(),
                _ => "cannot be verified".into(),
            })
        })?;
        let claims = data.claims;
        if !claims.get("sub").is_some_and(Value::is_string) {
            return Err(invalid("claim 'sub' is not a string".into()));
        }
        // The validation above parsed `exp` as a number; `iat` is optional.
        let exp = claims.get("exp").and_then(Value::as_u64);
        let iat = match claims.get("iat") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| invalid("claim 'iat' is malformed".into()))?,
            ),
        };
        if !self.max_lifetime.is_zero()
            && let Some(exp) = exp
        {
            // From issue to expiry; a token dated in the future counts from now, so that a
            // late `iat` cannot hide a long life.
            let now = jsonwebtoken::get_current_timestamp();
            let from = iat.map_or(now, |iat| iat.min(now));
            let lifetime = exp.saturating_sub(from);
            if lifetime > self.max_lifetime.as_secs() {
                return Err(invalid(format!(
                    "lives {lifetime} s from {} to exp, over the {} s the server accepts \
                     (--auth-max-token-lifetime): issue shorter-lived tokens",
                    if iat.is_some_and(|i| i <= now) {
                        "iat"
                    } else {
                        "now"
                    },
                    self.max_lifetime.as_secs()
                )));
            }
        }
        Ok(claims)
    }
}

/// What `martix token issue` signs.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub subject: String,
    pub roles: Vec<Role>,
    pub namespaces: Vec<String>,
    pub ttl: std::time::Duration,
    pub issuer: String,
    pub audience: String,
}

/// The signing key for [`issue`]: an HS256 secret, or an EC (P-256) private key in PEM
/// form.
///
/// RSA keys are refused: the `rsa` crate's private-key operations are not constant-time
/// (RUSTSEC-2023-0071, the Marvin attack), and signing is one. Verifying RS256 tokens from an
/// identity provider only uses public keys, which the advisory does not concern.
pub enum SigningKey {
    Secret(Vec<u8>),
    PrivateKeyPem { pem: Vec<u8>, kid: Option<String> },
}

/// Signs a token.
pub fn issue(key: &SigningKey, req: &TokenRequest) -> Result<String, String> {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: req.subject.clone(),
        roles: req.roles.clone(),
        namespaces: req.namespaces.clone(),
        iss: req.issuer.clone(),
        aud: req.audience.clone(),
        iat: now,
        exp: now + req.ttl.as_secs(),
    };
    let (header, key) = match key {
        SigningKey::Secret(s) => (Header::new(Algorithm::HS256), EncodingKey::from_secret(s)),
        SigningKey::PrivateKeyPem { pem, kid } => {
            let key = match EncodingKey::from_ec_pem(pem) {
                Ok(k) => k,
                // Parsing only, to say what is wrong; nothing is signed with it.
                Err(_) if EncodingKey::from_rsa_pem(pem).is_ok() => {
                    return Err(
                        "RSA keys do not sign Martix tokens (their signing is open to \
                                a timing attack, RUSTSEC-2023-0071): use an EC P-256 key \
                                (ES256) or a secret (HS256); RS256 tokens from an identity \
                                provider still verify"
                            .into(),
                    );
                }
                Err(_) => return Err("the key is not an EC (P-256) private key in PEM form".into()),
            };
            let mut h = Header::new(Algorithm::ES256);
            h.kid = kid.clone();
            (h, key)
        }
    };
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| format!("cannot sign: {e}"))
}

#[cfg(test)]
mod tests;
