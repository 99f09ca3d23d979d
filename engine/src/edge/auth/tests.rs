//! Unit tests of authentication: tokens, claims, keys and the JWKS URL.

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
    assert_eq!(allowed(Role::Client), 7);
    assert!(Op::QueryWorkflow.allowed_for(Role::Operator));
    assert!(Op::UpdateWorkflow.allowed_for(Role::Client));
    assert!(Op::UpdateWorkflow.allowed_for(Role::Operator));
    assert!(!Op::UpdateWorkflow.allowed_for(Role::Worker));
    assert!(
        Op::UpdateWorkflow.waits(),
        "it holds a long-poll slot while it waits"
    );
    assert!(!Op::QueryWorkflow.allowed_for(Role::Worker));
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

#[tokio::test]
async fn bad_tokens_are_refused_with_a_reason_that_hides_the_token() {
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
    let p = auth.authenticate(Some(&signed(&ok))).unwrap();
    assert_eq!(p.roles, vec![Role::Client]);
    let other = idp_claims(serde_json::json!({
        "aud": ["account", "billing"], "roles": ["client"], "namespaces": ["shop"],
    }));
    assert_eq!(
        auth.authenticate(Some(&signed(&other))),
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
        "https://martix.example/namespaces": ["shop-eu"],
    }));
    let p = auth.authenticate(Some(&signed(&keycloak))).unwrap();
    assert_eq!(p.roles, vec![Role::Operator]);
    assert_eq!(p.namespaces, Some(vec!["shop-eu".to_owned()]));
    assert!(p.authorize(Op::CancelWorkflow, "shop-eu").is_ok());
    // Only an IdP's own roles: nothing to grant, said with the claim looked at.
    let none = idp_claims(serde_json::json!({
        "realm_access": {"roles": ["offline_access"]},
        "https://martix.example/namespaces": ["shop-eu"],
    }));
    let e = auth.authenticate(Some(&signed(&none))).unwrap_err();
    assert!(e.to_string().contains("'realm_access.roles'"), "{e}");
    // The default claim no longer counts once another is configured.
    let flat = idp_claims(serde_json::json!({"roles": ["admin"], "namespaces": ["*"]}));
    assert!(auth.authenticate(Some(&signed(&flat))).is_err());
}

#[tokio::test]
async fn roles_per_namespace_grant_in_their_namespace_only() {
    let auth = with_claims(ClaimMapping {
        namespace_roles: Some("martix.namespace_roles".into()),
        ..ClaimMapping::default()
    });
    let t = idp_claims(serde_json::json!({"martix": {"namespace_roles": {
        "shop-eu": ["operator", "offline_access"],
        "shop-us": "client",
    }}}));
    let p = auth.authenticate(Some(&signed(&t))).unwrap();
    assert!(p.authorize(Op::CancelWorkflow, "shop-eu").is_ok());
    assert!(p.authorize(Op::StartWorkflow, "shop-us").is_ok());
    assert_eq!(
        p.authorize(Op::CancelWorkflow, "shop-us"),
        Err(Denied::Role {
            op: Op::CancelWorkflow,
            roles: vec!["client"],
            namespace: "shop-us".into()
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
        "martix": {"namespace_roles": {"shop-eu": ["operator"]}},
    }));
    let p = auth.authenticate(Some(&signed(&both))).unwrap();
    assert!(p.authorize(Op::CancelWorkflow, "shop-eu").is_ok());
    assert!(p.authorize(Op::StartWorkflow, "shop-us").is_ok());
    assert!(p.authorize(Op::CancelWorkflow, "shop-us").is_err());
    let malformed = idp_claims(serde_json::json!({"martix": {"namespace_roles": ["operator"]}}));
    let e = auth.authenticate(Some(&signed(&malformed))).unwrap_err();
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
            .is_ok()
    );
    let e = why(auth.authenticate(Some(&at(Some(now), Some(now + 3601)))));
    assert!(
        e.contains("lives 3601 s from iat to exp, over the 3600 s"),
        "{e}"
    );
    // Issued long ago, still valid a little: its whole life counts.
    let e = why(auth.authenticate(Some(&at(Some(now - 7200), Some(now + 60)))));
    assert!(e.contains("over the 3600 s"), "{e}");
    // Without `iat`, or dated in the future, the life counts from now.
    let e = why(auth.authenticate(Some(&at(None, Some(now + 7200)))));
    assert!(e.contains("lives 7200 s from now"), "{e}");
    let e = why(auth.authenticate(Some(&at(Some(now + 7000), Some(now + 7200)))));
    assert!(e.contains("from now"), "{e}");
    assert!(auth.authenticate(Some(&at(None, Some(now + 60)))).is_ok());
    // No expiry at all.
    let e = why(auth.authenticate(Some(&at(Some(now), None))));
    assert!(e.contains("has no 'exp' claim"), "{e}");
    // Zero lifts the limit.
    let unlimited = Authenticator::new(&AuthConfig {
        max_token_lifetime: Duration::ZERO,
        ..AuthConfig::hs256(SECRET)
    })
    .unwrap();
    let year = at(Some(now), Some(now + 365 * 24 * 3600));
    assert!(unlimited.authenticate(Some(&year)).is_ok());
    // The default is a day.
    let default = Authenticator::new(&AuthConfig::hs256(SECRET)).unwrap();
    assert!(default.authenticate(Some(&year)).is_err());
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

/// Authenticates until `token` verifies (the background fetch is in) or 5 s pass.
async fn until_verified(auth: &Authenticator, token: &[u8]) -> Result<Principal, Unauthenticated> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = auth.authenticate(Some(token));
        if r.is_ok() || std::time::Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn remote(url: String, min_refetch_interval: Duration) -> AuthConfig {
    AuthConfig::new(KeySource::JwksUrl(RemoteJwks {
        min_refetch_interval,
        ..RemoteJwks::new(url)
    }))
}

#[tokio::test]
async fn jwks_url_keys_rotate_on_an_unknown_kid_and_refetches_are_rate_limited() {
    let (pem1, jwk1) = es256_key("k1");
    let (pem2, jwk2) = es256_key("k2");
    let doc = Arc::new(std::sync::Mutex::new(serde_json::json!({"keys": [jwk1]})));
    let (url, hits) = jwks_server(doc.clone()).await;
    let interval = Duration::from_secs(2);
    let auth = Authenticator::new(&remote(url, interval)).unwrap();
    let fetched = || hits.load(std::sync::atomic::Ordering::SeqCst);
    let t1 = es256_token(&pem1, "k1");
    let t2 = es256_token(&pem2, "k2");
    let unknown = Err(Unauthenticated::Invalid(
        "signed with an unknown key".into(),
    ));

    until_verified(&auth, &t1).await.expect("k1 is served");
    tokio::time::sleep(Duration::from_millis(100)).await; // a redundant task, if any, is done
    assert_eq!(
        fetched(),
        1,
        "one fetch at start, shared by the first tokens"
    );
    assert_eq!(auth.authenticate(Some(&t2)), unknown);

    // The IdP rotates: k2 is published. Within the interval, no refetch, however many
    // unknown kids arrive.
    *doc.lock().unwrap() = serde_json::json!({"keys": [jwk1, jwk2]});
    for _ in 0..20 {
        assert_eq!(auth.authenticate(Some(&t2)), unknown);
    }
    assert_eq!(fetched(), 1, "refetches are rate-limited");

    tokio::time::sleep(interval + Duration::from_millis(200)).await;
    // The first k2 token past the interval starts the refetch and is told to retry.
    let e = auth.authenticate(Some(&t2)).unwrap_err();
    assert!(e.to_string().contains("retry in a few seconds"), "{e}");
    let p = until_verified(&auth, &t2)
        .await
        .expect("k2 after the refetch");
    assert_eq!(p.subject, "svc-a");
    assert_eq!(fetched(), 2);
    auth.authenticate(Some(&t1)).expect("k1 still");
    let forged = es256_token(&pem2, "k9");
    for _ in 0..50 {
        assert!(auth.authenticate(Some(&forged)).is_err());
        auth.authenticate(Some(&t2)).expect("k2 from the cache");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
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
    let (url, hits) = jwks_server(doc.clone()).await;
    let auth = Authenticator::new(&remote(url, Duration::ZERO)).unwrap();
    let t1 = es256_token(&pem1, "k1");
    until_verified(&auth, &t1).await.unwrap();
    // The IdP now answers garbage: the held keys stay.
    *doc.lock().unwrap() = serde_json::json!({"not": "a jwks"});
    let other = es256_token(&pem1, "k7");
    assert!(auth.authenticate(Some(&other)).is_err());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while hits.load(std::sync::atomic::Ordering::SeqCst) < 2 && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(auth.jwks_fetches() >= 2);
    auth.authenticate(Some(&t1)).expect("k1 is still held");

    // Nobody listens: tokens are refused, nothing waits.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", closed.local_addr().unwrap());
    drop(closed);
    let auth = Authenticator::new(&remote(url, Duration::from_secs(30))).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        auth.authenticate(Some(&t1)),
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
