//! One sync's exchange with the store, as plain commands in one pipeline (no script, so a
//! cluster can route them): a count is added where something was counted, a total read
//! only where a request asked, and nothing is sent for a key nobody used.

use redis::{from_redis_value_ref, RedisResult, Value};

use super::link::Link;
use crate::limits::ClientKey;

/// What a sync does with one window's key of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Skip,
    /// Add `n` and read the total back. A key the store is known to hold takes INCRBY; one
    /// that may be new takes `SET key n PX ttl NX GET`: one command that makes it with its
    /// expiry, and only when that finds a key (another gateway made it) an INCRBY follows.
    Add {
        n: u64,
        stored: bool,
    },
    /// Read the total.
    Read,
}

/// One policy and client in a sync: its two windows' keys and what to do with each.
#[derive(Debug)]
pub(super) struct Item {
    pub shard: usize,
    pub key: (u32, ClientKey),
    /// The window of `keys[0]`; `keys[1]` is the one before.
    pub window: u64,
    pub ops: [Op; 2],
    pub keys: [String; 2],
    /// How long a key made now lives.
    pub ttl_ms: u64,
    /// The store's totals, where it was asked.
    pub totals: [Option<u64>; 2],
}

/// Send the items' commands and fill in their totals; returns how many commands were sent
/// (each one a command run by the store).
///
/// The first round holds every add, and one MGET for all the reads. A second, only when
/// needed, holds an INCRBY for each `SET NX` that found the key already made, and a
/// PEXPIRE for each INCRBY that made a key (it was gone, so it has no expiry yet).
pub(super) async fn exchange(link: &mut Link, items: &mut [Item]) -> RedisResult<u64> {
    let mut first = redis::pipe();
    let mut adds: Vec<(usize, usize)> = Vec::new();
    let mut reads: Vec<(usize, usize)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        for (k, op) in item.ops.iter().enumerate() {
            match *op {
                Op::Add { n, stored: true } => {
                    first.cmd("INCRBY").arg(&item.keys[k]).arg(n);
                    adds.push((i, k));
                }
                Op::Add { n, stored: false } => {
                    first
                        .cmd("SET")
                        .arg(&item.keys[k])
                        .arg(n)
                        .arg("PX")
                        .arg(item.ttl_ms)
                        .arg("NX")
                        .arg("GET");
                    adds.push((i, k));
                }
                Op::Read => reads.push((i, k)),
                Op::Skip => {}
            }
        }
    }
    if !reads.is_empty() {
        let mget = first.cmd("MGET");
        for &(i, k) in &reads {
            mget.arg(&items[i].keys[k]);
        }
    }
    if first.is_empty() {
        return Ok(0);
    }
    let mut sent = first.len() as u64;
    let answers: Vec<Value> = first.query_async(link).await?;
    let mut second = redis::pipe();
    let mut followed: Vec<(usize, usize)> = Vec::new();
    for (&(i, k), answer) in adds.iter().zip(&answers) {
        let item = &mut items[i];
        let Op::Add { n, stored } = item.ops[k] else {
            continue;
        };
        let found: Option<u64> = from_redis_value_ref(answer)?;
        match (stored, found) {
            (true, Some(total)) => {
                item.totals[k] = Some(total);
                if total == n {
                    // the key was gone: INCRBY made it without an expiry
                    second
                        .cmd("PEXPIRE")
                        .arg(&item.keys[k])
                        .arg(item.ttl_ms)
                        .ignore();
                }
            }
            // made here, with its expiry
            (false, None) => item.totals[k] = Some(n),
            // made by another gateway first: add to it
            (false, Some(_)) => {
                second.cmd("INCRBY").arg(&item.keys[k]).arg(n);
                followed.push((i, k));
            }
            (true, None) => {}
        }
    }
    if let Some(answer) = answers.get(adds.len()) {
        let totals: Vec<Option<u64>> = from_redis_value_ref(answer)?;
        for (&(i, k), total) in reads.iter().zip(totals) {
            items[i].totals[k] = Some(total.unwrap_or(0));
        }
    }
    if !second.is_empty() {
        sent += second.len() as u64;
        let totals: Vec<u64> = second.query_async(link).await?;
        for (&(i, k), total) in followed.iter().zip(totals) {
            items[i].totals[k] = Some(total);
        }
    }
    Ok(sent)
}
