//! Who is calling, and what they may do: JWT bearer tokens, roles and namespaces.
//!
//! A token's claims name a subject, its roles and the namespaces it may touch (`*`: all).
//! Keys: an HS256 shared secret, or an RS256/ES256 public key as a PEM file or a JWKS file
//! (the token's `kid` picks the key). Issuer and audience are always checked, expiry with a
//! small leeway.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 10;
/// The audience Martix tokens carry unless configured otherwise.
pub const DEFAULT_AUDIENCE: &str = "martix";
/// The issuer Martix tokens carry unless configured otherwise.
pub const DEFAULT_ISSUER: &str = "martix";

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
    ListWorkflows,
    GetWorkflowHistory,
    CancelWorkflow,
    TerminateWorkflow,
    ResetWorkflow,
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
    pub const ALL: [Op; 21] = [
        Op::StartWorkflow,
        Op::DescribeWorkflow,
        Op::GetWorkflowResult,
        Op::SignalWorkflow,
        Op::ListWorkflows,
        Op::GetWorkflowHistory,
        Op::CancelWorkflow,
        Op::TerminateWorkflow,
        Op::ResetWorkflow,
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
                    | ListWorkflows
                    | GetWorkflowHistory
                    | CancelWorkflow
                    | TerminateWorkflow
                    | ResetWorkflow
                    | RetryActivity
                    | ReadMetrics
                    | QueryReadModel
                    | ReadEvents
            ),
        }
    }

    /// Operations that wait by design run without the request deadline.
    pub fn waits(self) -> bool {
        self.is_long_poll() || self == Op::GetWorkflowResult
    }

    /// Long polls wait by design: they are not counted by the request rate limit.
    pub fn is_long_poll(self) -> bool {
        matches!(self, Op::PollWorkflowTask | Op::PollActivityTask)
    }
}

/// The claims of a Martix token.
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
    pub roles: Vec<Role>,
    /// `None`: every namespace.
    pub namespaces: Option<Vec<String>>,
}

impl Principal {
    /// The caller when authentication is off (`martix dev`): everything is allowed; rate
    /// limits key on `subject` (the peer address).
    pub fn unauthenticated(subject: String) -> Self {
        Self {
            subject,
            roles: vec![Role::Admin],
            namespaces: None,
        }
    }

    fn from_claims(c: Claims) -> Self {
        let all = c.namespaces.iter().any(|n| n == "*");
        Self {
            subject: c.sub,
            roles: c.roles,
            namespaces: (!all).then_some(c.namespaces),
        }
    }

    /// Allows `op` on `namespace` (empty = `default`), or says why not.
    pub fn authorize(&self, op: Op, namespace: &str) -> Result<(), Denied> {
        if !self.roles.iter().any(|r| op.allowed_for(*r)) {
            return Err(Denied::Role {
                op,
                roles: self.roles.iter().map(|r| r.as_str()).collect(),
            });
        }
        let namespace = if namespace.is_empty() {
            "default"
        } else {
            namespace
        };
        match &self.namespaces {
            None => Ok(()),
            Some(list) if list.iter().any(|n| n == namespace) => Ok(()),
            Some(_) => Err(Denied::Namespace(namespace.to_owned())),
        }
    }
}

/// Why an authenticated caller may not do something (PERMISSION_DENIED).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Denied {
    #[error("permission denied: {op:?} needs another role than {}", roles.join(", "))]
    Role { op: Op, roles: Vec<&'static str> },
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
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Never the secret itself.
            KeySource::Secret(_) => f.write_str("Secret(<redacted>)"),
            KeySource::PublicKeyPem(p) => f.debug_tuple("PublicKeyPem").field(p).finish(),
            KeySource::Jwks(p) => f.debug_tuple("Jwks").field(p).finish(),
        }
    }
}

/// How tokens are checked.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub keys: KeySource,
    pub issuer: String,
    pub audience: String,
}

impl AuthConfig {
    /// HS256 with `secret`, the default issuer and audience.
    pub fn hs256(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            keys: KeySource::Secret(secret.into()),
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
        }
    }
}

/// Checks bearer tokens against configured keys.
pub struct Authenticator {
    /// Keys by `kid`; the key under `None` serves tokens without a `kid`.
    keys: HashMap<Option<String>, (DecodingKey, Algorithm)>,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("keys", &self.keys.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// RS256 for RSA keys, ES256 for EC keys (P-256).
fn public_pem(pem: &[u8], path: &Path) -> Result<(DecodingKey, Algorithm), String> {
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return Ok((k, Algorithm::RS256));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return Ok((k, Algorithm::ES256));
    }
    Err(format!(
        "{} holds no RSA or EC (P-256) public key in PEM form",
        path.display()
    ))
}

impl Authenticator {
    /// Loads the keys; a missing or unreadable key is an error naming the file.
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
        let mut keys = HashMap::new();
        match &config.keys {
            KeySource::Secret(s) => {
                if s.len() < 32 {
                    return Err(format!(
                        "the HS256 secret is {} bytes; use at least 32",
                        s.len()
                    ));
                }
                keys.insert(None, (DecodingKey::from_secret(s), Algorithm::HS256));
            }
            KeySource::PublicKeyPem(path) => {
                keys.insert(None, public_pem(&read(path)?, path)?);
            }
            KeySource::Jwks(path) => {
                let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&read(path)?)
                    .map_err(|e| format!("{} is not a JWKS document: {e}", path.display()))?;
                for jwk in &set.keys {
                    let alg = match &jwk.algorithm {
                        jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                        jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => {
                            Algorithm::ES256
                        }
                        _ => continue,
                    };
                    let key = DecodingKey::from_jwk(jwk)
                        .map_err(|e| format!("{}: a key is unusable: {e}", path.display()))?;
                    if keys.insert(jwk.common.key_id.clone(), (key, alg)).is_some() {
                        return Err(format!(
                            "{}: two keys share the kid {:?}; give each key its own",
                            path.display(),
                            jwk.common.key_id
                        ));
                    }
                }
                if keys.is_empty() {
                    return Err(format!("{} holds no RSA or EC key", path.display()));
                }
            }
        }
        Ok(Self {
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        })
    }

    /// Verifies the value of an `authorization` header.
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
        let (key, alg) = self
            .keys
            .get(&head.kid)
            .or_else(|| self.keys.get(&None).filter(|_| self.keys.len() == 1))
            .ok_or_else(|| Unauthenticated::Invalid("signed with an unknown key".into()))?;
        let mut v = Validation::new(*alg);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            Unauthenticated::Invalid(
                match e.kind() {
                    K::ExpiredSignature => "expired",
                    K::InvalidSignature => "bad signature",
                    K::InvalidAudience => "wrong audience",
                    K::InvalidIssuer => "wrong issuer",
                    K::ImmatureSignature => "not valid yet",
                    K::InvalidAlgorithm => "wrong algorithm",
                    K::MissingRequiredClaim(_) | K::InvalidClaimFormat(_) | K::Json(_) => {
                        "claims are malformed"
                    }
                    _ => "cannot be verified",
                }
                .into(),
            )
        })?;
        if data.claims.roles.is_empty() {
            return Err(Unauthenticated::Invalid("grants no role".into()));
        }
        Ok(Principal::from_claims(data.claims))
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

/// The signing key for [`issue`]: an HS256 secret, or an RSA/EC private key in PEM form.
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
            let (alg, key) = if let Ok(k) = EncodingKey::from_rsa_pem(pem) {
                (Algorithm::RS256, k)
            } else if let Ok(k) = EncodingKey::from_ec_pem(pem) {
                (Algorithm::ES256, k)
            } else {
                return Err("the key is not an RSA or EC (P-256) private key in PEM form".into());
            };
            let mut h = Header::new(alg);
            h.kid = kid.clone();
            (h, key)
        }
    };
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| format!("cannot sign: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn request(roles: Vec<Role>, ns: &[&str]) -> TokenRequest {
        TokenRequest {
            subject: "svc-a".into(),
            roles,
            namespaces: ns.iter().map(|s| s.to_string()).collect(),
            ttl: Duration::from_secs(60),
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
        }
    }

    fn bearer(t: &str) -> Vec<u8> {
        format!("Bearer {t}").into_bytes()
    }

    #[test]
    fn permission_table_matches_the_roles() {
        let allowed = |r: Role| Op::ALL.iter().filter(|op| op.allowed_for(r)).count();
        assert_eq!(allowed(Role::Admin), Op::ALL.len());
        assert_eq!(allowed(Role::Client), 5);
        assert!(Op::QueryReadModel.allowed_for(Role::Client));
        assert!(!Op::ReadEvents.allowed_for(Role::Client));
        assert!(!Op::RebuildReadModel.allowed_for(Role::Operator));
        assert!(!Op::CancelWorkflow.allowed_for(Role::Client));
        assert!(!Op::StartWorkflow.allowed_for(Role::Worker));
        assert!(Op::GetWorkflowHistory.allowed_for(Role::Worker));
        assert!(!Op::PollWorkflowTask.allowed_for(Role::Operator));
        assert!(!Op::ManageNamespaces.allowed_for(Role::Operator));
    }

    #[test]
    fn a_signed_token_authenticates_and_names_its_grants() {
        let auth = Authenticator::new(&AuthConfig::hs256(SECRET)).unwrap();
        let t = issue(
            &SigningKey::Secret(SECRET.to_vec()),
            &request(vec![Role::Client], &["shop"]),
        )
        .unwrap();
        let p = auth.authenticate(Some(&bearer(&t))).unwrap();
        assert_eq!(p.subject, "svc-a");
        assert!(p.authorize(Op::StartWorkflow, "shop").is_ok());
        assert_eq!(
            p.authorize(Op::StartWorkflow, "default"),
            Err(Denied::Namespace("default".into()))
        );
        assert!(matches!(
            p.authorize(Op::TerminateWorkflow, "shop"),
            Err(Denied::Role { .. })
        ));
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason_that_hides_the_token() {
        let auth = Authenticator::new(&AuthConfig::hs256(SECRET)).unwrap();
        assert_eq!(auth.authenticate(None), Err(Unauthenticated::Missing));
        assert_eq!(
            auth.authenticate(Some(b"Basic abc")),
            Err(Unauthenticated::Malformed)
        );
        let other = issue(
            &SigningKey::Secret(b"another-secret-another-secret-xx".to_vec()),
            &request(vec![Role::Admin], &["*"]),
        )
        .unwrap();
        let e = auth.authenticate(Some(&bearer(&other))).unwrap_err();
        assert_eq!(e, Unauthenticated::Invalid("bad signature".into()));
        assert!(!e.to_string().contains(&other));
        let mut wrong_aud = request(vec![Role::Admin], &["*"]);
        wrong_aud.audience = "someone-else".into();
        let t = issue(&SigningKey::Secret(SECRET.to_vec()), &wrong_aud).unwrap();
        assert_eq!(
            auth.authenticate(Some(&bearer(&t))),
            Err(Unauthenticated::Invalid("wrong audience".into()))
        );
        // Expired beyond the leeway.
        let now = jsonwebtoken::get_current_timestamp();
        let past = Claims {
            sub: "x".into(),
            roles: vec![Role::Admin],
            namespaces: vec!["*".into()],
            iss: DEFAULT_ISSUER.into(),
            aud: DEFAULT_AUDIENCE.into(),
            iat: now - 600,
            exp: now - 300,
        };
        let claims_past = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &past,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(
            auth.authenticate(Some(&bearer(&claims_past))),
            Err(Unauthenticated::Invalid("expired".into()))
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(Authenticator::new(&AuthConfig::hs256(b"short".to_vec())).is_err());
    }
}
