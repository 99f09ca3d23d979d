//! Verification keys: a shared secret, a PEM public key, a JWKS document.

use jsonwebtoken::{Algorithm, DecodingKey};
use std::collections::HashMap;
use std::path::Path;

/// Verification keys by `kid`; the key under `None` serves tokens without a `kid`.
pub(super) type KeySet = HashMap<Option<String>, (DecodingKey, Algorithm)>;

/// The key of a token's `kid`: its own, or the only key of a set whose one key has no `kid`.
pub(super) fn pick<'a>(
    keys: &'a KeySet,
    kid: &Option<String>,
) -> Option<&'a (DecodingKey, Algorithm)> {
    keys.get(kid)
        .or_else(|| keys.get(&None).filter(|_| keys.len() == 1))
}

/// The RS256 and ES256 (P-256) signing keys of a JWKS document; `origin` names it in errors.
pub(super) fn key_set(json: &[u8], origin: &str) -> Result<KeySet, String> {
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

pub(super) fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// RS256 for RSA keys, ES256 for EC keys (P-256).
pub(super) fn public_pem(pem: &[u8], path: &Path) -> Result<(DecodingKey, Algorithm), String> {
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
