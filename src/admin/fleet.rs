//! `GET /api/fleet`: every node of the fleet and where each stands against the fleet's
//! document; without a store, this node alone. The same view gives `/metrics` its
//! `pylon_fleet_nodes` and `pylon_config_info`.

use std::fmt::Write as _;

use serde_json::json;

use crate::control::fleet::{Node, Standing};
use crate::control::Current;

/// The fleet as this node sees it.
pub struct View {
    pub fleet: Option<String>,
    pub store: Option<String>,
    pub store_up: Option<bool>,
    pub store_error: Option<String>,
    /// The document the fleet should run: the store's, or this node's without one.
    pub hash: String,
    pub version: Option<u64>,
    /// This node's name.
    pub node: String,
    pub nodes: Vec<(Node, Standing)>,
}

impl View {
    pub fn of(current: &Current, address: String) -> View {
        let status = current.status();
        let applied = status.document.hash.to_string();
        let Some(fleet) = current.fleet() else {
            let me = Node {
                name: "local".to_string(),
                address,
                hash: applied.clone(),
                generation: status.generation,
                error: None,
                seen_ms: std::time::SystemTime::now()
                    .duration_since(std::time::SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                alive: true,
            };
            return View {
                fleet: None,
                store: None,
                store_up: None,
                store_error: None,
                hash: applied,
                version: None,
                node: me.name.clone(),
                nodes: vec![(me, Standing::Current)],
            };
        };
        let state = fleet.state();
        let stored = state.stored.clone();
        let nodes = state
            .nodes
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    n.standing(stored.as_ref().map(|(h, _)| h.as_str())),
                )
            })
            .collect();
        View {
            fleet: Some(fleet.name().to_string()),
            store: Some(fleet.store().to_string()),
            store_up: Some(state.store_up),
            store_error: state.store_error,
            hash: stored.as_ref().map_or(applied, |(h, _)| h.clone()),
            version: stored.map(|(_, v)| v),
            node: fleet.node().to_string(),
            nodes,
        }
    }

    /// Whether every node still in the fleet runs its document.
    pub fn agree(&self) -> bool {
        self.nodes
            .iter()
            .all(|(_, s)| matches!(s, Standing::Current | Standing::Gone))
    }

    pub fn render(&self) -> Vec<u8> {
        let nodes: Vec<_> = self
            .nodes
            .iter()
            .map(|(n, standing)| {
                json!({
                    "name": n.name,
                    "address": n.address,
                    "hash": n.hash,
                    "generation": n.generation,
                    "state": standing.name(),
                    "last_error": n.error,
                    "last_seen": n.seen_ms as f64 / 1000.0,
                    "self": n.name == self.node,
                })
            })
            .collect();
        let doc = json!({
            "fleet": self.fleet,
            "store": self.store,
            "store_state": self.store_up.map(|up| if up { "connected" } else { "unreachable" }),
            "store_error": self.store_error,
            "node": self.node,
            "document": { "hash": self.hash, "version": self.version },
            "agree": self.agree(),
            "nodes": nodes,
        });
        serde_json::to_vec_pretty(&doc).unwrap_or_default()
    }

    /// `pylon_config_info{hash}` (the document applied here) and `pylon_fleet_nodes{state}`.
    pub fn write_metrics(&self, out: &mut String, applied: &str) {
        out.push_str("# HELP pylon_config_info The policy document in force on this node, by its content hash.\n# TYPE pylon_config_info gauge\n");
        let _ = writeln!(out, "pylon_config_info{{hash=\"{applied}\"}} 1");
        out.push_str("# HELP pylon_fleet_nodes The fleet's nodes by where they stand against its document.\n# TYPE pylon_fleet_nodes gauge\n");
        for standing in Standing::ALL {
            let count = self.nodes.iter().filter(|(_, s)| *s == standing).count();
            let _ = writeln!(
                out,
                "pylon_fleet_nodes{{state=\"{}\"}} {count}",
                standing.name()
            );
        }
    }
}
