//! Checks that run after parsing: each section on its own first (so one run reports every
//! mistake), then the checks that span several values.

use std::collections::HashMap;
use std::net::IpAddr;

use super::control::ControlSection;
use super::error::Located;
use super::routes::BalanceKind;
use super::routes::RouteSection;
use super::values::Origin;
use super::FileConfig;

/// The errors of each top-level section, each `[[routes]]` entry and each `[auth.NAME]`
/// deserialized apart (spans stay those of the whole text): (span, key, message).
pub(super) fn section_errors(
    root: &toml::Spanned<toml::de::DeTable<'_>>,
) -> Vec<(Option<std::ops::Range<usize>>, String, String)> {
    use toml::de::{DeString, DeTable, DeValue};
    let span = root.span();
    let alone = |key: &toml::Spanned<DeString<'_>>, value: DeValue<'_>, index: Option<String>| {
        let mut table = DeTable::new();
        table.insert(key.clone(), toml::Spanned::new(span.clone(), value));
        let de = toml::Deserializer::from(toml::Spanned::new(span.clone(), table));
        serde_path_to_error::deserialize::<_, FileConfig>(de)
            .err()
            .map(|e| {
                let mut key = key_of(&e.path().to_string(), e.inner().message());
                if let Some(index) = &index {
                    // the entry was alone at [0]: give it its place in the file
                    key = key.replacen("routes[0]", index, 1);
                }
                (e.inner().span(), key, e.inner().message().to_string())
            })
    };
    let mut errors = Vec::new();
    for (key, value) in root.get_ref().iter() {
        match (key.get_ref().as_ref(), value.get_ref()) {
            ("routes", DeValue::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let mut one = toml::de::DeArray::new();
                    one.push(item.clone());
                    let one = DeValue::Array(one);
                    errors.extend(alone(key, one, Some(format!("routes[{i}]"))));
                }
            }
            ("auth", DeValue::Table(named)) => {
                for (name, section) in named.iter() {
                    let mut one = DeTable::new();
                    one.insert(name.clone(), section.clone());
                    errors.extend(alone(key, DeValue::Table(one), None));
                }
            }
            _ => errors.extend(alone(key, value.get_ref().clone(), None)),
        }
    }
    errors
}

/// The checks that look at more than one value.
pub(super) fn check(config: &FileConfig) -> Result<(), Located> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, route) in config.routes.iter().enumerate() {
        let prefix = &route.prefix.get_ref().0;
        if let Some(first) = seen.insert(prefix, i) {
            return Err((
                route.prefix.span(),
                format!("routes[{i}].prefix"),
                format!("duplicate prefix \"{prefix}\": routes[{first}] already has it"),
            ));
        }
    }
    for (i, route) in config.routes.iter().enumerate() {
        check_route(i, route)?;
        if let Some(names) = &route.auth {
            for name in &names.get_ref().0 {
                if !config.auth.contains_key(name) {
                    let known: Vec<&str> = config.auth.keys().map(String::as_str).collect();
                    return Err((
                        names.span(),
                        format!("routes[{i}].auth"),
                        format!(
                            "unknown authenticator \"{name}\": define [auth.{name}] (defined: {})",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
            }
        }
    }
    if let Some(tls) = &config.tls {
        if tls.listen.is_empty() {
            return Err((
                tls.certificates.span(),
                "tls.listen".to_string(),
                "[tls] needs at least one listen address".to_string(),
            ));
        }
        if tls.certificates.get_ref().is_empty() {
            return Err((
                tls.certificates.span(),
                "tls.certificates".to_string(),
                "[tls] needs at least one [[tls.certificates]]".to_string(),
            ));
        }
    }
    if let Some(control) = &config.control {
        check_control(control.get_ref())?;
    }
    let cors = &config.cors;
    if *cors.allow_credentials.get_ref() && cors.allow_origins.get_ref().contains(&Origin::Any) {
        return Err((
            cors.allow_credentials.span(),
            "cors.allow_credentials".to_string(),
            "allow_credentials = true needs a list of origins: browsers refuse credentials with \"*\""
                .to_string(),
        ));
    }
    Ok(())
}

/// A fleet needs both its store and its name.
fn check_control(control: &ControlSection) -> Result<(), Located> {
    let refuse = |span: std::ops::Range<usize>, key: &str, message: &str| {
        Err((span, format!("control.{key}"), message.to_string()))
    };
    match (&control.store, &control.fleet) {
        (Some(store), None) => refuse(
            store.span(),
            "store",
            "a store holds a fleet's policy document: name the fleet with fleet = \"NAME\"",
        ),
        (None, Some(fleet)) => refuse(
            fleet.span(),
            "fleet",
            "a fleet shares its policy document through a store: add store = \"redis://HOST:PORT\"",
        ),
        (None, None) => match (&control.node, &control.cache_file) {
            (Some(node), _) => refuse(
                node.span(),
                "node",
                "a node's name is for a fleet: add store and fleet",
            ),
            (None, Some(file)) => refuse(
                file.span(),
                "cache_file",
                "the cache file keeps a fleet's policy document: add store and fleet",
            ),
            (None, None) => Ok(()),
        },
        (Some(_), Some(_)) => Ok(()),
    }
}

/// A route's balancing and TLS settings must fit together.
pub(super) fn check_route(i: usize, route: &RouteSection) -> Result<(), Located> {
    let upstreams = &route.upstreams.get_ref().0;
    let mut seen = HashMap::new();
    for (j, u) in upstreams.iter().enumerate() {
        if let Some(first) = seen.insert(u.addr, j) {
            return Err((
                route.upstreams.span(),
                format!("routes[{i}].upstreams[{j}]"),
                format!(
                    "{} ({}) is already upstreams[{first}]: list an instance once and give it a weight",
                    u.authority, u.addr
                ),
            ));
        }
    }
    let hashing = *route.balance.get_ref() == BalanceKind::Hash;
    match (&route.hash_key, hashing) {
        (Some(key), false) => {
            return Err((
                key.span(),
                format!("routes[{i}].hash_key"),
                "hash_key is used only with balance = \"hash\"".to_string(),
            ))
        }
        (None, true) => {
            return Err((
                route.balance.span(),
                format!("routes[{i}].balance"),
                "balance = \"hash\" needs a hash_key: \"client_ip\", \"path\" or \"header:NAME\""
                    .to_string(),
            ))
        }
        _ => {}
    }
    if *route.tls_verify.get_ref() {
        if let Some(u) = upstreams
            .iter()
            .find(|u| u.tls && u.host.parse::<IpAddr>().is_ok())
        {
            return Err((
                route.upstreams.span(),
                format!("routes[{i}].upstreams"),
                format!(
                    "https upstream {} is an IP address: its certificate is checked against a host name, so write https://NAME:PORT, or set tls_verify = false",
                    u.authority
                ),
            ));
        }
    }
    Ok(())
}

/// The key path of an error: serde's path without toml's internal span markers, plus the
/// field a "missing field" message names.
pub(super) fn key_of(path: &str, message: &str) -> String {
    let path = path.replace(".$__serde_spanned_private_value", "");
    let path = if path == "." { String::new() } else { path };
    let field = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|lead| message.strip_prefix(lead))
        .and_then(|rest| rest.split('`').next())
        .filter(|f| !path.ends_with(&format!(".{f}")) && path != *f);
    match (path.is_empty(), field) {
        (true, Some(f)) => f.to_string(),
        (false, Some(f)) => format!("{path}.{f}"),
        (true, None) => "(top level)".to_string(),
        (false, None) => path,
    }
}
