//! Bearer tokens: JWTs signed by the municipality's identity provider, checked for signature,
//! issuer, audience, expiry and not-before, and read into a [`Caller`].
//!
//! Keys are configured by key id (`kid`), each with its one algorithm, so a token cannot pick
//! a weaker algorithm than its key's (no `alg: none`, no HMAC with a public key). Several keys
//! may be configured at once: that is how keys are rotated (add the new key, let the identity
//! provider sign with it, remove the old one when its last tokens have expired).
//!
//! Signatures are verified by `ring` (HMAC tags are compared in constant time); the signature
//! is checked before any claim, so an unsigned or forged token learns nothing about which of
//! its claims would have passed.
//!
//! A token is verified once: the caller it names is kept, under the SHA-256 of the whole
//! token, until the token expires, so the many calls a client makes with one token cost a
//! hash and a lookup instead of a signature check each (measured: docs/benchmarks.md). Only
//! tokens that verified are kept; expiry and not-before are checked again on every use.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{AuthError, Caller, Role};
use crate::domain::values::Code;

/// `[auth.jwt]` of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The `iss` a token must carry.
    pub issuer: String,
    /// The `aud` a token must carry (one of its audiences).
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (default 30, at most 300).
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// The verification keys, at least one.
    pub keys: Vec<JwtKeyConfig>,
}

fn default_leeway() -> u64 {
    30
}

/// One verification key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// The key id tokens name in their header.
    pub kid: String,
    /// EdDSA, ES256, ES384, RS256, RS384, RS512, PS256, PS384, PS512 (a PEM public key in
    /// `public_key_file`), or HS256, HS384, HS512 (a shared secret in `secret_file`).
    pub algorithm: String,
    pub public_key_file: Option<PathBuf>,
    pub secret_file: Option<PathBuf>,
}

/// A key a token may be signed with.
#[derive(Clone)]
pub struct VerificationKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// Checks bearer tokens. Cheap to clone.
#[derive(Clone)]
pub struct JwtVerifier {
    keys: Arc<Vec<VerificationKey>>,
    issuer: String,
    audience: String,
    leeway_seconds: u64,
    verified: Arc<Mutex<HashMap<[u8; 32], Verified>>>,
}

/// Tokens remembered as verified at most; past it the expired ones are dropped, and if that
/// is not enough, all of them (they are verified again on their next use).
const MAX_VERIFIED_TOKENS: usize = 10_000;

/// A token that verified: who it names and when it stops being valid.
#[derive(Clone)]
struct Verified {
    caller: Arc<Caller>,
    expires: u64,
    not_before: Option<u64>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("kids", &kids)
            .finish()
    }
}

/// The claims balagh reads besides the registered ones the validation checks.
#[derive(Debug, Deserialize)]
struct Claims {
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    sub: String,
    role: String,
    #[serde(default)]
    directorate: Option<String>,
    #[serde(default)]
    outlets: Vec<String>,
}

impl JwtVerifier {
    pub fn new(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        leeway_seconds: u64,
        keys: Vec<VerificationKey>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!keys.is_empty(), "auth.jwt needs at least one key");
        anyhow::ensure!(
            leeway_seconds <= 300,
            "auth.jwt.leeway_seconds is at most 300"
        );
        for (i, key) in keys.iter().enumerate() {
            anyhow::ensure!(!key.kid.is_empty(), "auth.jwt.keys: a key has an empty kid");
            anyhow::ensure!(
                keys[..i].iter().all(|k| k.kid != key.kid),
                "auth.jwt.keys: kid {:?} is named twice",
                key.kid
            );
        }
        Ok(Self {
            keys: Arc::new(keys),
            issuer: issuer.into(),
            audience: audience.into(),
            leeway_seconds,
            verified: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Reads the configured keys from their files.
    pub fn from_config(config: &JwtConfig) -> anyhow::Result<Self> {
        let mut keys = Vec::with_capacity(config.keys.len());
        for k in &config.keys {
            keys.push(load_key(k).with_context(|| format!("auth.jwt key {:?}", k.kid))?);
        }
        Self::new(
            config.issuer.clone(),
            config.audience.clone(),
            config.leeway_seconds,
            keys,
        )
    }

    /// The caller a bearer token names, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Arc<Caller>, AuthError> {
        self.verify_at(token, jsonwebtoken::get_current_timestamp())
    }

    /// [`JwtVerifier::verify`] at `now` (seconds since the epoch) for a token verified before;
    /// a new token is checked against the system clock, as `jsonwebtoken` does.
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Arc<Caller>, AuthError> {
        use sha2::{Digest, Sha256};
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let known = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&digest)
            .cloned();
        if let Some(known) = known {
            if now > known.expires.saturating_add(self.leeway_seconds) {
                return Err(AuthError::Expired);
            }
            if known
                .not_before
                .is_some_and(|nbf| now.saturating_add(self.leeway_seconds) < nbf)
            {
                return Err(AuthError::NotYetValid);
            }
            return Ok(known.caller);
        }
        let (caller, claims) = self.verify_signed(token)?;
        let caller = Arc::new(caller);
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= MAX_VERIFIED_TOKENS {
            let leeway = self.leeway_seconds;
            verified.retain(|_, v| now <= v.expires.saturating_add(leeway));
            if verified.len() >= MAX_VERIFIED_TOKENS {
                verified.clear();
            }
        }
        verified.insert(
            digest,
            Verified {
                caller: caller.clone(),
                expires: claims.0,
                not_before: claims.1,
            },
        );
        Ok(caller)
    }

    /// Checks the signature and the claims; the caller, and the token's `exp` and `nbf`.
    fn verify_signed(&self, token: &str) -> Result<(Caller, (u64, Option<u64>)), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let key = match &header.kid {
            Some(kid) => self.keys.iter().find(|k| &k.kid == kid),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
        .ok_or(AuthError::KeyUnknown)?;
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway_seconds;
        let data =
            jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                        AuthError::BadSignature
                    }
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                    ErrorKind::InvalidAudience => AuthError::WrongAudience,
                    ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                    ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => {
                        AuthError::ClaimsInvalid
                    }
                    _ => AuthError::Malformed,
                }
            })?;
        let times = (data.claims.exp, data.claims.nbf);
        Ok((caller_from_claims(data.claims)?, times))
    }
}

fn caller_from_claims(claims: Claims) -> Result<Caller, AuthError> {
    if !is_caller_id(&claims.sub) {
        return Err(AuthError::ClaimsInvalid);
    }
    let role = Role::parse(&claims.role).ok_or(AuthError::ClaimsInvalid)?;
    let directorate = claims
        .directorate
        .map(|d| Code::parse("directorate", &d))
        .transpose()
        .map_err(|_| AuthError::ClaimsInvalid)?;
    let outlets = claims
        .outlets
        .iter()
        .map(|o| Code::parse("outlets", o))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| AuthError::ClaimsInvalid)?;
    if role.is_directorate_scoped() != directorate.is_some() {
        // A liaison officer or specialist without a directorate would see nothing; anyone
        // else with one would be read as scoped when it is not.
        return Err(AuthError::ClaimsInvalid);
    }
    if !outlets.is_empty() && role != Role::Specialist {
        return Err(AuthError::ClaimsInvalid);
    }
    Ok(Caller {
        id: claims.sub,
        role,
        directorate,
        outlets,
    })
}

/// A caller id: 1 to 128 printable ASCII characters without spaces (employee ids, system
/// names), so it is safe in logs and the audit trail.
pub fn is_caller_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@:".contains(&b))
}

fn load_key(config: &JwtKeyConfig) -> anyhow::Result<VerificationKey> {
    let algorithm: Algorithm = config
        .algorithm
        .parse()
        .map_err(|_| anyhow::anyhow!("unknown algorithm {:?}", config.algorithm))?;
    let read = |path: &Option<PathBuf>, what: &str| -> anyhow::Result<Vec<u8>> {
        let path = path
            .as_ref()
            .with_context(|| format!("algorithm {} needs {what}", config.algorithm))?;
        std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
    };
    use Algorithm::*;
    let key = match algorithm {
        HS256 | HS384 | HS512 => {
            anyhow::ensure!(
                config.public_key_file.is_none(),
                "an HMAC key takes secret_file, not public_key_file"
            );
            let secret = read(&config.secret_file, "secret_file")?;
            let secret = String::from_utf8(secret).context("the secret is not text")?;
            let secret = secret.trim();
            anyhow::ensure!(secret.len() >= 32, "an HMAC secret needs at least 32 bytes");
            DecodingKey::from_secret(secret.as_bytes())
        }
        _ => {
            anyhow::ensure!(
                config.secret_file.is_none(),
                "a public-key algorithm takes public_key_file, not secret_file"
            );
            let pem = read(&config.public_key_file, "public_key_file")?;
            match algorithm {
                EdDSA => DecodingKey::from_ed_pem(&pem),
                ES256 | ES384 => DecodingKey::from_ec_pem(&pem),
                _ => DecodingKey::from_rsa_pem(&pem),
            }
            .context("the public key is not a PEM key of its algorithm")?
        }
    };
    Ok(VerificationKey {
        kid: config.kid.clone(),
        algorithm,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &[u8] = b"a test secret of at least thirty-two bytes";

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(
            "https://sso.test",
            "balagh",
            0,
            vec![VerificationKey {
                kid: "k1".into(),
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(SECRET),
            }],
        )
        .unwrap()
    }

    fn token(claims: serde_json::Value, secret: &[u8]) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn claims() -> serde_json::Value {
        json!({"sub": "emp-1001", "role": "liaison_officer", "directorate": "roads",
               "iss": "https://sso.test", "aud": "balagh", "exp": now() + 600})
    }

    #[test]
    fn a_good_token_names_its_caller_and_each_flaw_has_its_reason() {
        let v = verifier();
        let caller = v.verify(&token(claims(), SECRET)).unwrap();
        assert_eq!(caller.id, "emp-1001");
        assert_eq!(caller.role, Role::LiaisonOfficer);
        assert_eq!(caller.directorate.clone().unwrap().as_str(), "roads");

        let with = |key: &str, value: serde_json::Value| {
            let mut c = claims();
            c[key] = value;
            token(c, SECRET)
        };
        assert_eq!(
            v.verify(&token(
                claims(),
                b"another secret of at least thirty-two bytes"
            )),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            v.verify(&with("exp", json!(now() - 60))),
            Err(AuthError::Expired)
        );
        assert_eq!(
            v.verify(&with("nbf", json!(now() + 600))),
            Err(AuthError::NotYetValid)
        );
        assert_eq!(
            v.verify(&with("aud", json!("other"))),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            v.verify(&with("iss", json!("https://evil.test"))),
            Err(AuthError::WrongIssuer)
        );
        assert_eq!(
            v.verify(&with("role", json!("root"))),
            Err(AuthError::ClaimsInvalid)
        );
        assert_eq!(
            v.verify(&with("directorate", json!(null))),
            Err(AuthError::ClaimsInvalid)
        );
        assert_eq!(
            v.verify(&with("sub", json!("has space"))),
            Err(AuthError::ClaimsInvalid)
        );
        assert_eq!(v.verify("not.a.token"), Err(AuthError::Malformed));
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k9".into());
        let unknown = encode(&header, &claims(), &EncodingKey::from_secret(SECRET)).unwrap();
        assert_eq!(v.verify(&unknown), Err(AuthError::KeyUnknown));
        // alg "none": refused before anything else is read.
        let none = format!(
            "{}.{}.",
            base64_url(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#),
            base64_url(claims().to_string().as_bytes())
        );
        assert!(v.verify(&none).is_err());
    }

    #[test]
    fn a_verified_token_is_remembered_until_it_expires_and_no_longer() {
        let v = verifier();
        let exp = now() as u64 + 60;
        let mut c = claims();
        c["exp"] = exp.into();
        c["nbf"] = (now() - 10).into();
        let good = token(c, SECRET);
        let first = v.verify(&good).unwrap();
        let again = v.verify_at(&good, exp).unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second use is the remembered caller"
        );
        assert_eq!(v.verify_at(&good, exp + 1).err(), Some(AuthError::Expired));
        assert_eq!(v.verify_at(&good, 1).err(), Some(AuthError::NotYetValid));
        // A forged token is never remembered: each use is checked and refused.
        let forged = token(claims(), b"another secret of at least thirty-two bytes");
        for _ in 0..2 {
            assert_eq!(v.verify(&forged).err(), Some(AuthError::BadSignature));
        }
        // A token differing in one byte of its signature is another token.
        let mut tampered: Vec<char> = good.chars().collect();
        let i = tampered.len() - 10;
        tampered[i] = if tampered[i] == 'A' { 'B' } else { 'A' };
        let tampered: String = tampered.into_iter().collect();
        assert_eq!(v.verify(&tampered).err(), Some(AuthError::BadSignature));
    }

    fn base64_url(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }
}
