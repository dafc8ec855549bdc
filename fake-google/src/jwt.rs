//! The JWT-bearer grant (`urn:ietf:params:oauth:grant-type:jwt-bearer`) of
//! service accounts with domain-wide delegation, as Google's token endpoint
//! checks it: an RS256 signature by the service account's key, `iss` a
//! known service account, `aud` this token endpoint, a `scope` the grant
//! covers, a one-hour `iat`..`exp` window around now, and a `sub` the
//! administrator allowed. Refusals carry Google's codes and descriptions.
//!
//! Public keys come from the fixtures as SPKI PEM (`openssl pkey -pubout`);
//! the signature is checked with `ring` over the PKCS#1 key inside.

use std::collections::HashSet;

use base64::Engine as _;
use http::StatusCode;
use serde::Deserialize;

use super::errors::ApiError;

pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Google accepts assertions issued up to this long in the future (clock skew).
const SKEW_SECS: i64 = 300;
/// The longest `exp - iat` Google accepts.
const MAX_VALIDITY_SECS: i64 = 3600;

/// One service account of the fixtures.
pub(crate) struct ServiceAccount {
    pub client_email: String,
    /// PKCS#1 `RSAPublicKey` DER, as `ring` takes it.
    public_key: Vec<u8>,
    pub subjects: HashSet<String>,
}

impl ServiceAccount {
    /// From the fixture's SPKI PEM; the error says what is wrong with it.
    pub fn new(
        client_email: String,
        public_key_pem: &str,
        subjects: impl IntoIterator<Item = String>,
    ) -> Result<ServiceAccount, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::SubjectPublicKeyInfoDer;
        let spki = SubjectPublicKeyInfoDer::from_pem_slice(public_key_pem.as_bytes())
            .map_err(|e| format!("public_key_pem is not a PEM public key (SPKI): {e:?}"))?;
        let public_key = rsa_key_of_spki(spki.as_ref())?;
        Ok(ServiceAccount {
            client_email,
            public_key,
            subjects: subjects.into_iter().collect(),
        })
    }
}

/// The claims Google reads from a service account's assertion.
#[derive(Deserialize, Default)]
pub(crate) struct Claims {
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub aud: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub iat: Option<i64>,
    #[serde(default)]
    pub exp: Option<i64>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

fn b64(part: &str) -> Option<Vec<u8>> {
    // yup-oauth2 pads, the RFC does not: accept both.
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()
}

fn invalid_grant(description: &str) -> ApiError {
    ApiError::oauth(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

fn unauthorized_client() -> ApiError {
    ApiError::oauth(
        StatusCode::UNAUTHORIZED,
        "unauthorized_client",
        "Client is unauthorized to retrieve access tokens using this method, or client not \
         authorized for any of the scopes requested.",
    )
}

/// The claims of an assertion, unverified: for the request log only.
pub(crate) fn peek_claims(assertion: &str) -> Option<Claims> {
    let payload = assertion.split('.').nth(1)?;
    serde_json::from_slice(&b64(payload)?).ok()
}

/// Checks an assertion as Google does; `Ok` is the subject to issue a token
/// for. `granted_scope` is the one scope the administrator's grant covers
/// (the token endpoint's, passed in so this module needs nothing of `oauth`).
pub(crate) fn verify(
    assertion: &str,
    accounts: &[ServiceAccount],
    audience: &str,
    granted_scope: &str,
    now: i64,
) -> Result<String, ApiError> {
    let malformed = || invalid_grant("Invalid JWT: malformed assertion.");
    let parts: Vec<&str> = assertion.split('.').collect();
    let [head, payload, signature] = parts.as_slice() else {
        return Err(malformed());
    };
    let header: Header =
        serde_json::from_slice(&b64(head).ok_or_else(malformed)?).map_err(|_| malformed())?;
    if header.alg != "RS256" {
        return Err(invalid_grant("Invalid JWT: unsupported signing algorithm."));
    }
    let claims: Claims =
        serde_json::from_slice(&b64(payload).ok_or_else(malformed)?).map_err(|_| malformed())?;
    let signature = b64(signature).ok_or_else(malformed)?;
    let account = claims
        .iss
        .as_deref()
        .and_then(|iss| accounts.iter().find(|a| a.client_email == iss))
        .ok_or_else(|| invalid_grant("Invalid grant: account not found"))?;
    let signed = &assertion.as_bytes()[..head.len() + 1 + payload.len()];
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        &account.public_key,
    )
    .verify(signed, &signature)
    .map_err(|_| invalid_grant("Invalid JWT Signature."))?;
    if claims.aud.as_deref() != Some(audience) {
        return Err(invalid_grant(&format!(
            "Invalid JWT: Failed audience check. The expected audience is {audience}."
        )));
    }
    let timely = match (claims.iat, claims.exp) {
        (Some(iat), Some(exp)) => {
            iat <= now.saturating_add(SKEW_SECS)
                && exp > now
                && exp > iat
                && exp.saturating_sub(iat) <= MAX_VALIDITY_SECS
        }
        _ => false,
    };
    if !timely {
        return Err(invalid_grant(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
             timeframe. Check your iat and exp values in the JWT claim.",
        ));
    }
    let scope = claims.scope.as_deref().unwrap_or("");
    if scope.trim().is_empty() {
        return Err(ApiError::oauth(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "Empty or missing scope not allowed.",
        ));
    }
    // The administrator's grant covers the Calendar scope and nothing else.
    if scope.split_whitespace().any(|s| s != granted_scope) {
        return Err(unauthorized_client());
    }
    match claims.sub {
        Some(sub) if account.subjects.contains(&sub) => Ok(sub),
        _ => Err(unauthorized_client()),
    }
}

/// One DER element: (tag, contents, the rest).
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let short = || "truncated DER".to_owned();
    let (&tag, rest) = input.split_first().ok_or_else(short)?;
    let (&first, mut rest) = rest.split_first().ok_or_else(short)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 3 || rest.len() < n {
            return Err("unsupported DER length".to_owned());
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return Err(short());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// The PKCS#1 `RSAPublicKey` inside an SPKI of algorithm rsaEncryption.
fn rsa_key_of_spki(spki: &[u8]) -> Result<Vec<u8>, String> {
    const SEQUENCE: u8 = 0x30;
    const BIT_STRING: u8 = 0x03;
    const OID: u8 = 0x06;
    const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let (tag, body, _) = tlv(spki)?;
    if tag != SEQUENCE {
        return Err("SPKI is not a SEQUENCE".to_owned());
    }
    let (tag, algorithm, rest) = tlv(body)?;
    if tag != SEQUENCE {
        return Err("SPKI algorithm is not a SEQUENCE".to_owned());
    }
    let (tag, oid, _) = tlv(algorithm)?;
    if tag != OID || oid != RSA_ENCRYPTION {
        return Err("the public key is not an RSA key".to_owned());
    }
    let (tag, bits, _) = tlv(rest)?;
    match bits.split_first() {
        Some((0, key)) if tag == BIT_STRING => Ok(key.to_vec()),
        _ => Err("SPKI subjectPublicKey is not a BIT STRING".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_and_truncation() {
        assert_eq!(
            tlv(&[0x30, 0x01, 0xaa, 0xbb]).unwrap(),
            (0x30, &[0xaa][..], &[0xbb][..])
        );
        let long = [&[0x04, 0x81, 0x80][..], &[7u8; 0x80]].concat();
        assert_eq!(tlv(&long).unwrap().1.len(), 0x80);
        assert!(tlv(&[0x30, 0x05, 0x00]).is_err());
        assert!(tlv(&[0x30, 0x84, 0, 0, 0, 1]).is_err());
        assert!(rsa_key_of_spki(&[0x30, 0x00]).is_err());
    }

    #[test]
    fn garbage_assertions_are_invalid_grants() {
        for assertion in ["", "a.b", "a.b.c", "e30.e30.AAAA", "x.y.z.w"] {
            let err = verify(assertion, &[], "http://t/token", "https://x/scope", 0).unwrap_err();
            assert_eq!(err.body["error"], "invalid_grant", "{assertion}");
        }
    }
}
