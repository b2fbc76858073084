//! A route's header transforms (`request_headers`, `response_headers`): fields set or
//! removed, with values compiled at load. A value is fixed text or text with placeholders
//! (`{client_ip}`, `{request_id}`, `{route}`, `{host}`) filled per request.

use std::net::IpAddr;

use bytes::{BufMut, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::wire::{static_name, static_value};

/// What a transform does to a field, for the check of which fields it may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Set,
    Remove,
}

/// What a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    ClientIp,
    RequestId,
    Route,
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A field value: fixed, or built from parts per request.
#[derive(Debug, Clone)]
enum Value {
    Fixed(HeaderValue),
    Template(Vec<Part>),
}

/// What the placeholders of one request are.
pub struct Vars<'a> {
    pub client_ip: Option<IpAddr>,
    pub request_id: Option<&'a HeaderValue>,
    pub route: &'a str,
    pub host: Option<&'a HeaderValue>,
}

/// Fields to set and fields to remove, in that order of application: removals first, so a
/// field both removed and set ends up set.
#[derive(Debug, Clone, Default)]
pub struct Transform {
    set: Vec<(HeaderName, Value)>,
    remove: Vec<HeaderName>,
}

impl Transform {
    /// Compile a section's `set` and `remove`; `refused` says why a field name may not be
    /// set or removed (`None`: it may).
    pub fn compile<'a>(
        set: impl IntoIterator<Item = (&'a str, &'a str)>,
        remove: impl IntoIterator<Item = &'a str>,
        refused: impl Fn(&HeaderName, Op) -> Option<String>,
    ) -> Result<Transform, String> {
        let name_of = |text: &str, op: Op| -> Result<HeaderName, String> {
            let name = static_name(text)?;
            match refused(&name, op) {
                Some(why) => Err(format!("{text}: {why}")),
                None => Ok(name),
            }
        };
        let mut out = Transform::default();
        for name in remove {
            out.remove.push(name_of(name, Op::Remove)?);
        }
        for (name, text) in set {
            let header = name_of(name, Op::Set)?;
            let parts = parse_template(text).map_err(|e| format!("{name}: {e}"))?;
            let value = match parts.as_slice() {
                [] => Value::Fixed(HeaderValue::from_static("")),
                [Part::Text(fixed)] => {
                    Value::Fixed(static_value(fixed).map_err(|e| format!("{name}: {e}"))?)
                }
                _ => {
                    for part in &parts {
                        if let Part::Text(fixed) = part {
                            static_value(fixed).map_err(|e| format!("{name}: {e}"))?;
                        }
                    }
                    Value::Template(parts)
                }
            };
            out.set.push((header, value));
        }
        Ok(out)
    }

    /// How many fields it may add.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// Apply to a request's or response's fields.
    pub fn apply(&self, headers: &mut HeaderMap, vars: &Vars<'_>) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            let value = match value {
                Value::Fixed(v) => v.clone(),
                Value::Template(parts) => match fill(parts, vars) {
                    Some(v) => v,
                    // a placeholder with no value here (no Host, say): the field is left out
                    None => continue,
                },
            };
            headers.insert(name.clone(), value);
        }
    }
}

/// Split `{client_ip}`-style placeholders out of a value; an unknown one or a brace that
/// does not close is an error.
fn parse_template(text: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_string()));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("\"{text}\": a '{{' without its '}}'"))?;
        let var = match &after[..close] {
            "client_ip" => Var::ClientIp,
            "request_id" => Var::RequestId,
            "route" => Var::Route,
            "host" => Var::Host,
            other => {
                return Err(format!(
                    "\"{text}\": unknown placeholder {{{other}}} (known: {{client_ip}}, {{request_id}}, {{route}}, {{host}})"
                ))
            }
        };
        parts.push(Part::Var(var));
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("\"{text}\": a '}}' without its '{{'"));
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(parts)
}

fn fill(parts: &[Part], vars: &Vars<'_>) -> Option<HeaderValue> {
    let mut out = BytesMut::with_capacity(64);
    for part in parts {
        match part {
            Part::Text(text) => out.put_slice(text.as_bytes()),
            Part::Var(Var::ClientIp) => crate::forwarding::push_ip(&mut out, vars.client_ip?),
            Part::Var(Var::RequestId) => out.put_slice(vars.request_id?.as_bytes()),
            Part::Var(Var::Route) => out.put_slice(vars.route.as_bytes()),
            Part::Var(Var::Host) => out.put_slice(vars.host?.as_bytes()),
        }
    }
    HeaderValue::from_maybe_shared(out.freeze()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(id: &'a HeaderValue, host: &'a HeaderValue) -> Vars<'a> {
        Vars {
            client_ip: Some("2001:db8::7".parse().unwrap()),
            request_id: Some(id),
            route: "/api",
            host: Some(host),
        }
    }

    #[test]
    fn fields_are_set_and_removed_with_placeholders_filled() {
        let t = Transform::compile(
            [
                ("X-Api-Version", "2"),
                (
                    "X-Client",
                    "{client_ip} via {route} for {host} ({request_id})",
                ),
            ],
            ["Cookie", "x-api-version"],
            |_, _| None,
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("cookie", HeaderValue::from_static("a=1"));
        h.insert("x-api-version", HeaderValue::from_static("1"));
        let (id, host) = (
            HeaderValue::from_static("id-1"),
            HeaderValue::from_static("a.example"),
        );
        t.apply(&mut h, &vars(&id, &host));
        assert!(h.get("cookie").is_none());
        assert_eq!(h["x-api-version"], "2");
        assert_eq!(h["x-client"], "2001:db8::7 via /api for a.example (id-1)");
    }

    #[test]
    fn a_placeholder_without_a_value_leaves_the_field_out() {
        let t = Transform::compile([("X-Host", "{host}")], [], |_, _| None).unwrap();
        let mut h = HeaderMap::new();
        let id = HeaderValue::from_static("id");
        t.apply(
            &mut h,
            &Vars {
                client_ip: None,
                request_id: Some(&id),
                route: "/",
                host: None,
            },
        );
        assert!(h.is_empty());
    }

    #[test]
    fn bad_transforms_are_refused_at_load() {
        let refuse =
            |n: &HeaderName, _| (n == "x-request-id").then(|| "the gateway sets it".to_string());
        for (set, remove, needle) in [
            (
                vec![("X-A", "{nope}")],
                vec![],
                "unknown placeholder {nope}",
            ),
            (vec![("X-A", "{client_ip")], vec![], "without its '}'"),
            (vec![("X-A", "a}b")], vec![], "without its '{'"),
            (
                vec![("X-A", "caf\u{e9}")],
                vec![],
                "not a valid header value",
            ),
            (vec![("X-A", "a\nb")], vec![], "not a valid header value"),
            (vec![("Bad Name", "1")], vec![], "not a valid header name"),
            (vec![("X-Request-Id", "1")], vec![], "the gateway sets it"),
            (vec![], vec!["X-Request-Id"], "the gateway sets it"),
        ] {
            let e = Transform::compile(set, remove, refuse).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }
}
