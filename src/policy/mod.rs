//! Route policies, compiled at load: allowed methods, client allow and deny lists, the
//! body size limit and header transforms. A route that sets none of them pays nothing for
//! them: each is an `Option` on the route, checked only when set.
//!
//! `request_filter` checks them in this order (see the gateway): path rules,
//! redirect, preflight, deny/allow, methods, authentication, rate limit, body size.

pub mod cors;
pub mod ipset;
pub mod security_headers;
#[cfg(test)]
mod testkit;
pub mod transform;

use std::net::IpAddr;

use http::{HeaderValue, Method};

pub use cors::{AllowOrigin, Cors};
pub use ipset::IpSet;
pub use security_headers::SecurityHeaders;
pub use transform::{Op, Transform, Vars};

/// The methods a route takes, and the `Allow` value of its 405.
#[derive(Debug, Clone)]
pub struct Methods {
    methods: Vec<Method>,
    pub allow: HeaderValue,
}

impl Methods {
    /// From the configured names; HEAD comes with GET.
    pub fn new(names: &[String]) -> Result<Methods, String> {
        let mut methods: Vec<Method> = Vec::with_capacity(names.len() + 1);
        for name in names {
            let method = Method::from_bytes(name.as_bytes())
                .map_err(|_| format!("\"{name}\" is not a method name"))?;
            if method.as_str() != name.to_ascii_uppercase() {
                return Err(format!("\"{name}\": write methods in upper case"));
            }
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
        if methods.is_empty() {
            return Err("the list is empty: a route has to take at least one method".into());
        }
        if methods.contains(&Method::GET) && !methods.contains(&Method::HEAD) {
            methods.push(Method::HEAD);
        }
        let allow = methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let allow = HeaderValue::from_str(&allow).map_err(|e| e.to_string())?;
        Ok(Methods { methods, allow })
    }

    pub fn allows(&self, method: &Method) -> bool {
        self.methods.contains(method)
    }
}

/// Which clients a route takes: never those in `deny`; with `allow`, only those in it.
#[derive(Debug, Clone)]
pub struct Access {
    pub allow: Option<IpSet>,
    pub deny: Option<IpSet>,
}

impl Access {
    /// Whether `client` may use the route. A request without a client address (a Unix
    /// socket) is refused when an allow list is set.
    pub fn admits(&self, client: Option<IpAddr>) -> bool {
        match client {
            Some(ip) => {
                !self.deny.as_ref().is_some_and(|d| d.contains(ip))
                    && self.allow.as_ref().is_none_or(|a| a.contains(ip))
            }
            None => self.allow.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_follows_get_and_the_allow_field_lists_them() {
        let m = Methods::new(&["GET".into(), "POST".into()]).unwrap();
        assert!(m.allows(&Method::GET) && m.allows(&Method::HEAD) && m.allows(&Method::POST));
        assert!(!m.allows(&Method::DELETE));
        assert_eq!(m.allow, "GET, POST, HEAD");
        assert!(Methods::new(&["get".into()])
            .unwrap_err()
            .contains("upper case"));
        assert!(Methods::new(&["G T".into()]).is_err());
        assert!(Methods::new(&[]).is_err());
    }

    #[test]
    fn deny_wins_over_allow() {
        let nets = |n: &[&str]| IpSet::new(n.iter().map(|s| s.parse::<ipnet::IpNet>().unwrap()));
        let a = Access {
            allow: Some(nets(&["10.0.0.0/8"])),
            deny: Some(nets(&["10.1.0.0/16"])),
        };
        assert!(a.admits(Some("10.2.3.4".parse().unwrap())));
        assert!(!a.admits(Some("10.1.3.4".parse().unwrap())));
        assert!(!a.admits(Some("192.0.2.1".parse().unwrap())));
        assert!(!a.admits(None));
        let deny_only = Access {
            allow: None,
            deny: Some(nets(&["192.0.2.0/24"])),
        };
        assert!(deny_only.admits(Some("198.51.100.1".parse().unwrap())));
        assert!(deny_only.admits(None));
    }
}
