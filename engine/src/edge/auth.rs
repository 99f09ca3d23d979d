//! Who is calling, and what they may do: JWT bearer tokens, roles and namespaces.
//!
//! A token's claims name a subject, its roles and the namespaces it may touch (`*`: all),
//! and may grant roles per namespace; which claims hold them is configurable
//! ([`ClaimMapping`]), so that an identity provider's tokens serve as they are.
//! Keys: an HS256 shared secret, or RS256/ES256 public keys as a PEM file, a JWKS file or a
//! JWKS URL (the token's `kid` picks the key). Issuer and audience (a string or an array) are
//! always checked, expiry with a small leeway, and a token may not live longer than
//! configured.

use super::jwks::Remote;
pub use super::jwks::RemoteJwks;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;
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
    fn roles_in(&self, namespace: &str) -> Vec<Role> {
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

/// Which claims hold a token's grants. A name is a top-level claim, or a dotted path into
/// nested objects (`realm_access.roles`); a top-level claim whose name has dots
/// (`https://example.com/roles`, as Auth0 wants) is found first. A grant is a list of
/// strings, or one string of space-separated names.
///
/// Role names other than client, worker, operator and admin are ignored, in every token:
/// identity providers put many roles in the same claim (`offline_access`,
/// `uma_authorization`), and ignoring a name can only grant less. A token must still grant
/// one known role somewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimMapping {
    /// Roles held in every namespace of `namespaces` (default `roles`).
    pub roles: String,
    /// Namespaces those roles apply to, `*` for all (default `namespaces`). A token without
    /// this claim holds them in no namespace.
    pub namespaces: String,
    /// An object of roles per namespace, `{"orders-eu": ["operator"], "*": ["client"]}`
    /// (default: none).
    pub namespace_roles: Option<String>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            roles: "roles".into(),
            namespaces: "namespaces".into(),
            namespace_roles: None,
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

/// Verification keys by `kid`; the key under `None` serves tokens without a `kid`.
pub(crate) type KeySet = HashMap<Option<String>, (DecodingKey, Algorithm)>;

/// The key of a token's `kid`: its own, or the only key of a set whose one key has no `kid`.
pub(crate) fn pick<'a>(
    keys: &'a KeySet,
    kid: &Option<String>,
) -> Option<&'a (DecodingKey, Algorithm)> {
    keys.get(kid)
        .or_else(|| keys.get(&None).filter(|_| keys.len() == 1))
}

/// The RS256 and ES256 (P-256) signing keys of a JWKS document; `origin` names it in errors.
pub(crate) fn key_set(json: &[u8], origin: &str) -> Result<KeySet, String> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, KeyAlgorithm, PublicKeyUse};
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(json)
        .map_err(|e| format!("{origin} is not a JWKS document: {e}"))?;
    let mut keys = KeySet::new();
    for jwk in &set.keys {
        // Identity providers publish encryption keys beside the signing ones (Keycloak:
        // RSA-OAEP); they sign nothing.
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => continue,
        };
        let declared = match jwk.common.key_algorithm {
            None => None,
            Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
            Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
            Some(_) => continue,
        };
        if declared.is_some_and(|d| d != alg) {
            continue;
        }
        let key =
            DecodingKey::from_jwk(jwk).map_err(|e| format!("{origin}: a key is unusable: {e}"))?;
        if keys.insert(jwk.common.key_id.clone(), (key, alg)).is_some() {
            return Err(format!(
                "{origin}: two keys share the kid {:?}; give each key its own",
                jwk.common.key_id
            ));
        }
    }
    if keys.is_empty() {
        return Err(format!(
            "{origin} holds no RS256 or ES256 (P-256) signing key"
        ));
    }
    Ok(keys)
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

/// The value at `path`: the top-level claim of that name, else the dotted path.
fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut v = claims.get(parts.next()?)?;
    for part in parts {
        v = v.as_object()?.get(part)?;
    }
    Some(v)
}

/// A list of names: an array of strings, or one string of space-separated names.
fn names(v: &Value, what: &str) -> Result<Vec<String>, Unauthenticated> {
    let malformed = || Unauthenticated::Invalid(format!("claim '{what}' is not a list of names"));
    match v {
        Value::String(s) => Ok(s.split_whitespace().map(str::to_owned).collect()),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or_else(malformed))
            .collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err(malformed()),
    }
}

/// The known roles among `names`; other names are an identity provider's own.
fn known_roles(names: Vec<String>) -> Vec<Role> {
    let mut roles = Vec::new();
    for n in names {
        if let Ok(r) = n.parse::<Role>()
            && !roles.contains(&r)
        {
            roles.push(r);
        }
    }
    roles
}

impl Authenticator {
    /// Loads the keys; a missing or unreadable key is an error naming the file. A JWKS URL is
    /// checked here and fetched in the background when a runtime is running, else on the
    /// first token.
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
        let path_ok = |p: &str, flag: &str| {
            if p.is_empty() || (p.split('.').any(str::is_empty) && !p.contains("://")) {
                Err(format!(
                    "the {flag} claim '{p}' is not a claim name or a dotted path"
                ))
            } else {
                Ok(())
            }
        };
        path_ok(&config.claims.roles, "roles")?;
        path_ok(&config.claims.namespaces, "namespaces")?;
        if let Some(p) = &config.claims.namespace_roles {
            path_ok(p, "namespace-roles")?;
        }
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

    /// Verifies the value of an `authorization` header. Waits only for a token whose `kid`
    /// a JWKS URL's cached keys lack (see [`RemoteJwks`]).
    pub async fn authenticate(&self, header: Option<&[u8]>) -> Result<Principal, Unauthenticated> {
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
                let mut keys = remote.keys();
                if pick(&keys, &head.kid).is_none() {
                    keys = remote.refetch_for(&head.kid).await;
                }
                self.verify(token, pick(&keys, &head.kid))?
            }
        };
        self.principal(claims)
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

    /// The grants of verified claims, through the claim mapping.
    fn principal(&self, claims: Map<String, Value>) -> Result<Principal, Unauthenticated> {
        let m = &self.claims;
        let roles = match claim(&claims, &m.roles) {
            Some(v) => known_roles(names(v, &m.roles)?),
            None => Vec::new(),
        };
        let namespaces = match claim(&claims, &m.namespaces) {
            Some(v) => names(v, &m.namespaces)?,
            None => Vec::new(),
        };
        let mut namespace_roles = HashMap::new();
        if let Some(path) = &m.namespace_roles
            && let Some(v) = claim(&claims, path)
        {
            let per_ns = v.as_object().ok_or_else(|| {
                Unauthenticated::Invalid(format!(
                    "claim '{path}' is not an object of roles per namespace"
                ))
            })?;
            for (ns, v) in per_ns {
                let r = known_roles(names(v, path)?);
                if !r.is_empty() {
                    namespace_roles.insert(ns.clone(), r);
                }
            }
        }
        if roles.is_empty() && namespace_roles.is_empty() {
            let mut looked = format!("'{}'", m.roles);
            if let Some(p) = &m.namespace_roles {
                looked.push_str(&format!(" and '{p}'"));
            }
            return Err(Unauthenticated::Invalid(format!(
                "grants no role (client, worker, operator or admin in claim {looked})"
            )));
        }
        let all = namespaces.iter().any(|n| n == "*");
        Ok(Principal {
            subject: claims
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            roles,
            namespaces: (!all).then_some(namespaces),
            namespace_roles,
        })
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

    #[tokio::test]
    async fn a_signed_token_authenticates_and_names_its_grants() {
        let auth = Authenticator::new(&AuthConfig::hs256(SECRET)).unwrap();
        let t = issue(
            &SigningKey::Secret(SECRET.to_vec()),
            &request(vec![Role::Client], &["shop"]),
        )
        .unwrap();
        let p = auth.authenticate(Some(&bearer(&t))).await.unwrap();
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

    #[tokio::test]
    async fn bad_tokens_are_refused_with_a_reason_that_hides_the_token() {
        let auth = Authenticator::new(&AuthConfig::hs256(SECRET)).unwrap();
        assert_eq!(auth.authenticate(None).await, Err(Unauthenticated::Missing));
        assert_eq!(
            auth.authenticate(Some(b"Basic abc")).await,
            Err(Unauthenticated::Malformed)
        );
        let other = issue(
            &SigningKey::Secret(b"another-secret-another-secret-xx".to_vec()),
            &request(vec![Role::Admin], &["*"]),
        )
        .unwrap();
        let e = auth.authenticate(Some(&bearer(&other))).await.unwrap_err();
        assert_eq!(e, Unauthenticated::Invalid("bad signature".into()));
        assert!(!e.to_string().contains(&other));
        let mut wrong_aud = request(vec![Role::Admin], &["*"]);
        wrong_aud.audience = "someone-else".into();
        let t = issue(&SigningKey::Secret(SECRET.to_vec()), &wrong_aud).unwrap();
        assert_eq!(
            auth.authenticate(Some(&bearer(&t))).await,
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
            auth.authenticate(Some(&bearer(&claims_past))).await,
            Err(Unauthenticated::Invalid("expired".into()))
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(Authenticator::new(&AuthConfig::hs256(b"short".to_vec())).is_err());
    }

    /// An HS256 token of arbitrary claims (an identity provider's shape).
    fn signed(claims: &Value) -> Vec<u8> {
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        bearer(&t)
    }

    /// Claims valid for a minute, from the default issuer to the default audience.
    fn idp_claims(extra: Value) -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        let mut c = serde_json::json!({
            "sub": "alice", "iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE,
            "iat": now, "exp": now + 60,
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    fn with_claims(claims: ClaimMapping) -> Authenticator {
        Authenticator::new(&AuthConfig {
            claims,
            ..AuthConfig::hs256(SECRET)
        })
        .unwrap()
    }

    #[tokio::test]
    async fn an_aud_array_holding_ours_is_accepted_and_one_without_it_is_not() {
        let auth = Authenticator::new(&AuthConfig::hs256(SECRET)).unwrap();
        let ok = idp_claims(serde_json::json!({
            "aud": ["account", DEFAULT_AUDIENCE], "roles": ["client"], "namespaces": ["shop"],
        }));
        let p = auth.authenticate(Some(&signed(&ok))).await.unwrap();
        assert_eq!(p.roles, vec![Role::Client]);
        let other = idp_claims(serde_json::json!({
            "aud": ["account", "billing"], "roles": ["client"], "namespaces": ["shop"],
        }));
        assert_eq!(
            auth.authenticate(Some(&signed(&other))).await,
            Err(Unauthenticated::Invalid("wrong audience".into()))
        );
    }

    #[tokio::test]
    async fn roles_come_from_a_nested_claim_and_unknown_role_names_are_ignored() {
        let auth = with_claims(ClaimMapping {
            roles: "realm_access.roles".into(),
            namespaces: "https://martix.example/namespaces".into(),
            namespace_roles: None,
        });
        // Keycloak's shape; the namespaces claim has dots in its name (Auth0's custom claims).
        let keycloak = idp_claims(serde_json::json!({
            "realm_access": {"roles": ["offline_access", "operator", "uma_authorization"]},
            "https://martix.example/namespaces": ["orders-eu"],
        }));
        let p = auth.authenticate(Some(&signed(&keycloak))).await.unwrap();
        assert_eq!(p.roles, vec![Role::Operator]);
        assert_eq!(p.namespaces, Some(vec!["orders-eu".to_owned()]));
        assert!(p.authorize(Op::CancelWorkflow, "orders-eu").is_ok());
        // Only an IdP's own roles: nothing to grant, said with the claim looked at.
        let none = idp_claims(serde_json::json!({
            "realm_access": {"roles": ["offline_access"]},
            "https://martix.example/namespaces": ["orders-eu"],
        }));
        let e = auth.authenticate(Some(&signed(&none))).await.unwrap_err();
        assert!(e.to_string().contains("'realm_access.roles'"), "{e}");
        // The default claim no longer counts once another is configured.
        let flat = idp_claims(serde_json::json!({"roles": ["admin"], "namespaces": ["*"]}));
        assert!(auth.authenticate(Some(&signed(&flat))).await.is_err());
    }

    #[tokio::test]
    async fn roles_per_namespace_grant_in_their_namespace_only() {
        let auth = with_claims(ClaimMapping {
            namespace_roles: Some("martix.namespace_roles".into()),
            ..ClaimMapping::default()
        });
        let t = idp_claims(serde_json::json!({"martix": {"namespace_roles": {
            "orders-eu": ["operator", "offline_access"],
            "orders-us": "client",
        }}}));
        let p = auth.authenticate(Some(&signed(&t))).await.unwrap();
        assert!(p.authorize(Op::CancelWorkflow, "orders-eu").is_ok());
        assert!(p.authorize(Op::StartWorkflow, "orders-us").is_ok());
        assert_eq!(
            p.authorize(Op::CancelWorkflow, "orders-us"),
            Err(Denied::Role {
                op: Op::CancelWorkflow,
                roles: vec!["client"],
                namespace: "orders-us".into()
            })
        );
        assert_eq!(
            p.authorize(Op::StartWorkflow, "default"),
            Err(Denied::Namespace("default".into()))
        );
        // Engine-wide reads (`*`) are not granted by a role in one namespace.
        assert!(p.authorize(Op::ReadMetrics, "*").is_err());
        // Token-wide roles and roles per namespace add up.
        let both = idp_claims(serde_json::json!({
            "roles": ["client"], "namespaces": ["*"],
            "martix": {"namespace_roles": {"orders-eu": ["operator"]}},
        }));
        let p = auth.authenticate(Some(&signed(&both))).await.unwrap();
        assert!(p.authorize(Op::CancelWorkflow, "orders-eu").is_ok());
        assert!(p.authorize(Op::StartWorkflow, "orders-us").is_ok());
        assert!(p.authorize(Op::CancelWorkflow, "orders-us").is_err());
        let malformed =
            idp_claims(serde_json::json!({"martix": {"namespace_roles": ["operator"]}}));
        let e = auth
            .authenticate(Some(&signed(&malformed)))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("roles per namespace"), "{e}");
    }

    #[tokio::test]
    async fn a_token_that_lives_longer_than_the_maximum_is_refused() {
        let auth = Authenticator::new(&AuthConfig {
            max_token_lifetime: Duration::from_secs(3600),
            ..AuthConfig::hs256(SECRET)
        })
        .unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        let grants = serde_json::json!({"roles": ["client"], "namespaces": ["*"]});
        let at = |iat: Option<u64>, exp: Option<u64>| {
            let mut c = idp_claims(grants.clone());
            let o = c.as_object_mut().unwrap();
            o.remove("iat");
            o.remove("exp");
            if let Some(iat) = iat {
                o.insert("iat".into(), iat.into());
            }
            if let Some(exp) = exp {
                o.insert("exp".into(), exp.into());
            }
            signed(&c)
        };
        let why = |r: Result<Principal, Unauthenticated>| r.unwrap_err().to_string();
        assert!(
            auth.authenticate(Some(&at(Some(now), Some(now + 3600))))
                .await
                .is_ok()
        );
        let e = why(auth
            .authenticate(Some(&at(Some(now), Some(now + 3601))))
            .await);
        assert!(
            e.contains("lives 3601 s from iat to exp, over the 3600 s"),
            "{e}"
        );
        // Issued long ago, still valid a little: its whole life counts.
        let e = why(auth
            .authenticate(Some(&at(Some(now - 7200), Some(now + 60))))
            .await);
        assert!(e.contains("over the 3600 s"), "{e}");
        // Without `iat`, or dated in the future, the life counts from now.
        let e = why(auth.authenticate(Some(&at(None, Some(now + 7200)))).await);
        assert!(e.contains("lives 7200 s from now"), "{e}");
        let e = why(auth
            .authenticate(Some(&at(Some(now + 7000), Some(now + 7200))))
            .await);
        assert!(e.contains("from now"), "{e}");
        assert!(
            auth.authenticate(Some(&at(None, Some(now + 60))))
                .await
                .is_ok()
        );
        // No expiry at all.
        let e = why(auth.authenticate(Some(&at(Some(now), None))).await);
        assert!(e.contains("has no 'exp' claim"), "{e}");
        // Zero lifts the limit.
        let unlimited = Authenticator::new(&AuthConfig {
            max_token_lifetime: Duration::ZERO,
            ..AuthConfig::hs256(SECRET)
        })
        .unwrap();
        let year = at(Some(now), Some(now + 365 * 24 * 3600));
        assert!(unlimited.authenticate(Some(&year)).await.is_ok());
        // The default is a day.
        let default = Authenticator::new(&AuthConfig::hs256(SECRET)).unwrap();
        assert!(default.authenticate(Some(&year)).await.is_err());
    }

    /// A P-256 key pair: the private key in PEM, the public key as a JWK named `kid`.
    fn es256_key(kid: &str) -> (Vec<u8>, Value) {
        use base64::Engine as _;
        let key = rcgen::KeyPair::generate().unwrap();
        let raw = key.public_key_raw(); // 0x04 || x || y
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        });
        (key.serialize_pem().into_bytes(), jwk)
    }

    fn es256_token(pem: &[u8], kid: &str) -> Vec<u8> {
        let t = issue(
            &SigningKey::PrivateKeyPem {
                pem: pem.to_vec(),
                kid: Some(kid.into()),
            },
            &request(vec![Role::Client], &["*"]),
        )
        .unwrap();
        bearer(&t)
    }

    /// Serves `doc` at `/jwks` on a loopback port and counts the fetches.
    async fn jwks_server(
        doc: Arc<std::sync::Mutex<Value>>,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = doc.lock().unwrap().clone();
                async move { axum::Json(body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, hits)
    }

    #[tokio::test]
    async fn jwks_url_keys_rotate_on_an_unknown_kid_and_refetches_are_rate_limited() {
        let (pem1, jwk1) = es256_key("k1");
        let (pem2, jwk2) = es256_key("k2");
        let doc = Arc::new(std::sync::Mutex::new(serde_json::json!({"keys": [jwk1]})));
        let (url, hits) = jwks_server(doc.clone()).await;
        let interval = Duration::from_secs(2);
        let auth = Authenticator::new(&AuthConfig::new(KeySource::JwksUrl(RemoteJwks {
            url,
            min_refetch_interval: interval,
            timeout: Duration::from_secs(5),
            max_age: Duration::from_secs(3600),
        })))
        .unwrap();
        let fetched = || hits.load(std::sync::atomic::Ordering::SeqCst);
        let t1 = es256_token(&pem1, "k1");
        let t2 = es256_token(&pem2, "k2");
        let unknown = Err(Unauthenticated::Invalid(
            "signed with an unknown key".into(),
        ));

        auth.authenticate(Some(&t1)).await.expect("k1 is served");
        assert_eq!(
            fetched(),
            1,
            "one fetch, shared by the start and the first token"
        );
        assert_eq!(auth.authenticate(Some(&t2)).await, unknown);

        // The IdP rotates: k2 is published. Within the interval, no refetch, however many
        // unknown kids arrive.
        *doc.lock().unwrap() = serde_json::json!({"keys": [jwk1, jwk2]});
        for _ in 0..20 {
            assert_eq!(auth.authenticate(Some(&t2)).await, unknown);
        }
        assert_eq!(fetched(), 1, "refetches are rate-limited");

        tokio::time::sleep(interval + Duration::from_millis(200)).await;
        let p = auth
            .authenticate(Some(&t2))
            .await
            .expect("k2 after a refetch");
        assert_eq!(p.subject, "svc-a");
        assert_eq!(fetched(), 2);
        auth.authenticate(Some(&t1)).await.expect("k1 still");
        auth.authenticate(Some(&t2))
            .await
            .expect("k2 from the cache");
        let forged = es256_token(&pem2, "k9");
        let concurrent: Vec<_> = (0..20).map(|_| auth.authenticate(Some(&forged))).collect();
        for r in futures::future::join_all(concurrent).await {
            assert_eq!(r, unknown);
        }
        assert_eq!(
            fetched(),
            2,
            "known kids and a flood of unknown ones fetch nothing"
        );
        assert_eq!(auth.jwks_fetches(), 2);
    }

    #[tokio::test]
    async fn an_unreachable_jwks_url_refuses_tokens_and_keeps_the_keys_held() {
        let (pem1, jwk1) = es256_key("k1");
        let doc = Arc::new(std::sync::Mutex::new(serde_json::json!({"keys": [jwk1]})));
        let (url, _hits) = jwks_server(doc.clone()).await;
        let auth = Authenticator::new(&AuthConfig::new(KeySource::JwksUrl(RemoteJwks {
            url,
            min_refetch_interval: Duration::ZERO,
            timeout: Duration::from_secs(5),
            max_age: Duration::from_secs(3600),
        })))
        .unwrap();
        let t1 = es256_token(&pem1, "k1");
        auth.authenticate(Some(&t1)).await.unwrap();
        // The IdP now answers garbage: the held keys stay.
        *doc.lock().unwrap() = serde_json::json!({"not": "a jwks"});
        let other = es256_token(&pem1, "k7");
        assert!(auth.authenticate(Some(&other)).await.is_err());
        assert_eq!(auth.jwks_fetches(), 2);
        auth.authenticate(Some(&t1))
            .await
            .expect("k1 is still held");

        // Nobody listens: the token is refused within the timeout.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", closed.local_addr().unwrap());
        drop(closed);
        let auth = Authenticator::new(&AuthConfig::new(KeySource::JwksUrl(RemoteJwks {
            timeout: Duration::from_secs(2),
            ..RemoteJwks::new(url)
        })))
        .unwrap();
        assert_eq!(
            auth.authenticate(Some(&t1)).await,
            Err(Unauthenticated::Invalid(
                "signed with an unknown key".into()
            ))
        );
    }

    #[test]
    fn a_jwks_url_must_be_https_off_loopback() {
        let config = |url: &str| AuthConfig::new(KeySource::JwksUrl(RemoteJwks::new(url)));
        let e = Authenticator::new(&config("http://idp.example/jwks")).unwrap_err();
        assert!(e.contains("give an https URL"), "{e}");
        assert!(Authenticator::new(&config("ftp://idp.example/jwks")).is_err());
        assert!(Authenticator::new(&config("not a url")).is_err());
        assert!(Authenticator::new(&config("http://127.0.0.1:9/jwks")).is_ok());
        assert!(Authenticator::new(&config("http://[::1]:9/jwks")).is_ok());
    }

    #[test]
    fn a_jwks_document_keeps_its_signing_keys_only() {
        let (_, jwk) = es256_key("sig");
        let doc = serde_json::json!({"keys": [
            jwk,
            {"kty": "RSA", "kid": "enc", "use": "enc", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        ]});
        let keys = key_set(doc.to_string().as_bytes(), "test").unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keys.contains_key(&Some("sig".to_owned())));
    }
}
