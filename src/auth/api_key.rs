//! API keys: the config holds SHA-256 hashes, never keys. A presented key is hashed and
//! compared with every configured hash in constant time, so neither the match nor its
//! position shows in the timing.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};
use http::request::Parts;
use ring::digest;
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::credentials::{query_param, strip_query_param};
use super::{Admitted, Denial};

/// Where the key is sent.
pub(crate) enum KeyLocation {
    /// The header, and its name as configured (for the challenge).
    Header {
        name: HeaderName,
        display: String,
    },
    Query(Box<str>),
}

/// A compiled `type = "api_key"`.
pub(crate) struct ApiKeys {
    location: KeyLocation,
    /// SHA-256 of a key, and its consumer.
    keys: Vec<([u8; 32], Box<str>)>,
}

impl ApiKeys {
    pub fn new(location: KeyLocation, keys: Vec<([u8; 32], Box<str>)>) -> ApiKeys {
        ApiKeys { location, keys }
    }

    /// The WWW-Authenticate value for a missing or wrong key.
    pub fn challenge(&self) -> String {
        match &self.location {
            KeyLocation::Header { display, .. } => {
                format!("ApiKey realm=\"pylon\", header=\"{display}\"")
            }
            KeyLocation::Query(name) => format!("ApiKey realm=\"pylon\", query=\"{name}\""),
        }
    }

    pub fn authenticate(&self, req: &Parts) -> Result<Admitted, Denial> {
        let consumer = match &self.location {
            KeyLocation::Header { name, .. } => {
                let mut values = req.headers.get_all(name).iter();
                let value = values.next().ok_or(Denial::Unauthorized)?;
                if values.next().is_some() {
                    return Err(Denial::Unauthorized);
                }
                self.consumer_of(value.as_bytes())
            }
            KeyLocation::Query(name) => {
                let query = req.uri.query().ok_or(Denial::Unauthorized)?;
                let key = query_param(query, name).ok_or(Denial::Unauthorized)?;
                self.consumer_of(key.as_bytes())
            }
        };
        let consumer = consumer.ok_or(Denial::Unauthorized)?;
        Ok(Admitted {
            subject: consumer.to_string(),
            forward: Vec::new(),
        })
    }

    /// The consumer whose hash matches, looking at every entry whatever matched.
    fn consumer_of(&self, key: &[u8]) -> Option<&str> {
        if key.is_empty() {
            return None;
        }
        let presented = digest::digest(&digest::SHA256, key);
        let presented = presented.as_ref();
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, (hash, _)) in self.keys.iter().enumerate() {
            let same = hash.as_slice().ct_eq(presented);
            index.conditional_assign(&(i as u32), same);
            found |= same;
        }
        if bool::from(found) {
            self.keys.get(index as usize).map(|(_, c)| &**c)
        } else {
            None
        }
    }

    pub fn strip_header(&self, headers: &mut HeaderMap) {
        if let KeyLocation::Header { name, .. } = &self.location {
            headers.remove(name);
        }
    }

    pub fn strip_query(&self, target: &[u8]) -> Option<Bytes> {
        match &self.location {
            KeyLocation::Query(name) => strip_query_param(target, name),
            KeyLocation::Header { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::auth::testkit::*;
    use crate::auth::{Clock, Rejection};
    use http::HeaderMap;

    fn section(location: &str, strip: bool) -> String {
        format!(
            "[auth.partners]\ntype = \"api_key\"\n{location}\nstrip_credentials = {strip}\nkeys = {{ acme = \"sha256:{}\", globex = \"sha256:{}\" }}\n",
            sha256_hex(b"acme-secret-key"),
            sha256_hex(b"globex key/+=").to_uppercase()
        )
    }

    #[tokio::test]
    async fn header_keys_identify_their_consumer() {
        let auths = build(&section("header = \"X-Api-Key\"", true), Clock::system());
        let auth = auths.get("partners").unwrap();
        let id = auth
            .authenticate(&request("/", &[("x-api-key", "acme-secret-key")]))
            .await
            .unwrap();
        assert_eq!(
            (id.key.as_str(), id.subject.as_str()),
            ("partners:acme", "acme")
        );
        assert!(id.forward.is_empty());
        let id = auth
            .authenticate(&request("/", &[("X-API-KEY", "globex key/+=")]))
            .await
            .unwrap();
        assert_eq!(id.subject, "globex");
        for headers in [
            vec![("x-api-key", "acme-secret-keY")],
            vec![("x-api-key", "")],
            vec![("x-other", "acme-secret-key")],
            vec![
                ("x-api-key", "acme-secret-key"),
                ("x-api-key", "acme-secret-key"),
            ],
            vec![],
        ] {
            match auth
                .authenticate(&request("/?x-api-key=acme-secret-key", &headers))
                .await
            {
                Err(Rejection::Unauthorized { challenge }) => {
                    assert_eq!(challenge, "ApiKey realm=\"pylon\", header=\"X-Api-Key\"")
                }
                other => panic!("{headers:?}: {other:?}"),
            }
        }
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "acme-secret-key".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        auth.strip_credentials(&mut h);
        assert!(!h.contains_key("x-api-key"));
        assert!(h.contains_key("x-kept"));
        assert_eq!(auth.strip_query(b"/a?x-api-key=1"), None);
        assert!(auth.forwarded_header_names().is_empty());
    }

    #[tokio::test]
    async fn query_keys_identify_their_consumer_and_can_be_stripped() {
        let auths = build(&section("query = \"api_key\"", true), Clock::system());
        let auth = auths.get("partners").unwrap();
        let id = auth
            .authenticate(&request("/orders?page=2&api_key=acme-secret-key", &[]))
            .await
            .unwrap();
        assert_eq!(id.key, "partners:acme");
        let id = auth
            .authenticate(&request("/?api_key=globex%20key%2F%2B%3D", &[]))
            .await
            .unwrap();
        assert_eq!(id.subject, "globex");
        for target in [
            "/?api_key=wrong",
            "/?api_key=",
            "/?api_key=acme-secret-key&api_key=acme-secret-key",
            "/?apikey=acme-secret-key",
            "/",
        ] {
            match auth
                .authenticate(&request(target, &[("x-api-key", "acme-secret-key")]))
                .await
            {
                Err(Rejection::Unauthorized { challenge }) => {
                    assert_eq!(challenge, "ApiKey realm=\"pylon\", query=\"api_key\"")
                }
                other => panic!("{target}: {other:?}"),
            }
        }
        let stripped = auth
            .strip_query(b"/orders?page=2&api_key=acme-secret-key")
            .unwrap();
        assert_eq!(&stripped[..], b"/orders?page=2");
        assert_eq!(auth.strip_query(b"/orders?page=2"), None);
        // header stripping leaves a query-key authenticator's headers alone
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer x".parse().unwrap());
        auth.strip_credentials(&mut h);
        assert!(h.contains_key("authorization"));
    }

    #[tokio::test]
    async fn without_strip_credentials_nothing_is_removed() {
        let auths = build(&section("query = \"api_key\"", false), Clock::system());
        let auth = auths.get("partners").unwrap();
        assert_eq!(auth.strip_query(b"/orders?api_key=acme-secret-key"), None);
        let auths = build(&section("header = \"X-Api-Key\"", false), Clock::system());
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "acme-secret-key".parse().unwrap());
        auths.get("partners").unwrap().strip_credentials(&mut h);
        assert!(h.contains_key("x-api-key"));
    }
}
