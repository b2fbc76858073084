//! The claims of a verified token, read in one pass and compared as they go by: expiry,
//! issuer, audience, scopes, and the values forwarded as headers.

use std::borrow::Cow;
use std::fmt;

use http::header::{HeaderName, HeaderValue};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::JwtVerifier;

/// The claims, read in one pass, compared as they go by.
pub(super) struct Claims<'a> {
    pub(super) exp: Option<f64>,
    pub(super) nbf: Option<f64>,
    pub(super) iat: Option<f64>,
    pub(super) issuer_ok: bool,
    pub(super) audience_ok: bool,
    pub(super) sub: Option<Cow<'a, str>>,
    /// `azp` or `client_id`, the subject of tokens without `sub`.
    pub(super) client: Option<Cow<'a, str>>,
    /// Bit i: required scope i is granted.
    pub(super) scopes: u64,
    pub(super) forward: Vec<(HeaderName, HeaderValue)>,
}

pub(super) struct ClaimsSeed<'v> {
    pub(super) verifier: &'v JwtVerifier,
}

impl<'de> DeserializeSeed<'de> for ClaimsSeed<'_> {
    type Value = Claims<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Claims<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ClaimsSeed<'_> {
    type Value = Claims<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JWT claims object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claims<'de>, A::Error> {
        let v = self.verifier;
        let mut c = Claims {
            exp: None,
            nbf: None,
            iat: None,
            issuer_ok: false,
            audience_ok: false,
            sub: None,
            client: None,
            scopes: 0,
            forward: Vec::new(),
        };
        let mut seen = 0u16;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let forward_to = v.forward_header(&key);
            // A repeated registered claim could mean two things: refuse it.
            let bit = match &*key {
                "exp" => 1,
                "nbf" => 2,
                "iat" => 4,
                "iss" => 8,
                "aud" => 16,
                "sub" => 32,
                "scope" => 64,
                "scp" => 128,
                _ => 0,
            };
            if seen & bit != 0 {
                return Err(de::Error::custom("repeated claim"));
            }
            seen |= bit;
            let mut text: Option<Cow<'de, str>> = None;
            match &*key {
                "exp" | "nbf" | "iat" => {
                    let value = map.next_value::<NumericDate>()?.0;
                    match &*key {
                        "exp" => c.exp = Some(value),
                        "nbf" => c.nbf = Some(value),
                        _ => c.iat = Some(value),
                    }
                    if let Some(h) = forward_to {
                        push(&mut c.forward, h, &number_text(value));
                    }
                }
                "iss" => {
                    let iss = map.next_value::<Cow<'de, str>>()?;
                    c.issuer_ok = v.issuer.as_deref().is_some_and(|want| *want == *iss);
                    text = Some(iss);
                }
                "aud" => {
                    let each = |aud: &str| v.audience.iter().any(|a| **a == *aud);
                    let (ok, single) = map.next_value_seed(OneOrMany { each })?;
                    c.audience_ok = ok;
                    text = single;
                }
                "sub" => {
                    let sub = map.next_value::<Cow<'de, str>>()?;
                    if let Some(h) = forward_to {
                        push(&mut c.forward, h, &sub);
                    }
                    c.sub = Some(sub);
                }
                "azp" | "client_id" => match map.next_value::<Scalar<'de>>()? {
                    Scalar::Text(t) => {
                        if let Some(h) = forward_to {
                            push(&mut c.forward, h, &t);
                        }
                        if c.client.is_none() || &*key == "azp" {
                            c.client = Some(t);
                        }
                    }
                    other => forward_scalar(&mut c.forward, forward_to, other),
                },
                "scope" => {
                    let granted = map.next_value::<Cow<'de, str>>()?;
                    c.scopes |= v.scopes_in(&granted);
                    text = Some(granted);
                }
                "scp" => {
                    let each = |granted: &str| v.scopes_in(granted);
                    let (mask, single) = map.next_value_seed(OneOrMany { each })?;
                    c.scopes |= mask;
                    text = single;
                }
                _ if forward_to.is_some() => {
                    let value = map.next_value::<Scalar<'de>>()?;
                    forward_scalar(&mut c.forward, forward_to, value);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            if let (Some(h), Some(t)) = (forward_to, text) {
                push(&mut c.forward, h, &t);
            }
        }
        Ok(c)
    }
}

/// Add a forwarded header, skipping values that are not valid header values.
pub(super) fn push(forward: &mut Vec<(HeaderName, HeaderValue)>, name: &HeaderName, text: &str) {
    if let Some(value) = claim_value(text) {
        forward.push((name.clone(), value));
    }
}

/// A claim as a header value: printable ASCII only, so that upstreams (and the gateway's
/// own logs) can read it as text; anything else is skipped.
pub(crate) fn claim_value(text: &str) -> Option<HeaderValue> {
    if !text
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return None;
    }
    HeaderValue::from_str(text).ok()
}

pub(super) fn forward_scalar(
    forward: &mut Vec<(HeaderName, HeaderValue)>,
    name: Option<&HeaderName>,
    value: Scalar<'_>,
) {
    let Some(name) = name else { return };
    match value {
        Scalar::Text(t) => push(forward, name, &t),
        Scalar::Number(n) => push(forward, name, &n),
        Scalar::Bool(b) => push(forward, name, if b { "true" } else { "false" }),
        Scalar::Other => {}
    }
}

/// An integral NumericDate as digits, anything else as Rust prints it.
pub(super) fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// Seconds since the epoch (RFC 7519 §2), whole: see [`super::MAX_TIME_CLAIM_SPAN_S`] for the
/// range a verifier takes.
pub(super) struct NumericDate(f64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = NumericDate;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a NumericDate")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NumericDate, E> {
                Ok(NumericDate(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NumericDate, E> {
                Ok(NumericDate(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<NumericDate, E> {
                // whole seconds only: `1e300` or `1700000000.5` is refused
                if v.is_finite() && v.fract() == 0.0 {
                    Ok(NumericDate(v))
                } else {
                    Err(E::custom("not a whole number of seconds"))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A claim value as forwarding sees it: strings, numbers and booleans make header values.
pub(crate) enum Scalar<'a> {
    Text(Cow<'a, str>),
    Number(String),
    Bool(bool),
    Other,
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Text(Cow::Owned(v)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Number(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Number(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Number(number_text(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// A claim that is a string or an array of strings (`aud`, `scp`): `each` judges one string
/// and the judgements are or-ed together. The value comes back too when it is a single
/// string, for forwarding.
pub(super) struct OneOrMany<F> {
    each: F,
}

impl<'de, T, F> DeserializeSeed<'de> for OneOrMany<F>
where
    T: Default + std::ops::BitOrAssign,
    F: Fn(&str) -> T,
{
    type Value = (T, Option<Cow<'de, str>>);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T, F> Visitor<'de> for OneOrMany<F>
where
    T: Default + std::ops::BitOrAssign,
    F: Fn(&str) -> T,
{
    type Value = (T, Option<Cow<'de, str>>);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(((self.each)(v), Some(Cow::Borrowed(v))))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(((self.each)(v), Some(Cow::Owned(v.to_string()))))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut all = T::default();
        while let Some(one) = seq.next_element::<Cow<'de, str>>()? {
            all |= (self.each)(&one);
        }
        Ok((all, None))
    }
}
