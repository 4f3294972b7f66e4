//! Where each Gateway is served: at the addresses Portico publishes, shared by every
//! Gateway without addresses of its own, or at addresses of its own from
//! `--gateway-address-pool`.
//!
//! - With a pool, every Gateway gets addresses of its own, as a load balancer per
//!   Gateway would give it. It gets the `spec.addresses` values it asks for, if they
//!   are in the pool and not an older Gateway's. Otherwise it gets the next free
//!   address, trying first the one its status already shows, so that a restart or an
//!   older Gateway's removal does not move it.
//! - Without a pool, a Gateway that asks for no address value is served at the
//!   published addresses. One that asks for a value cannot have it.
//! - A Gateway that cannot have what it asks for is not served: Programmed=False with
//!   the spec's `AddressNotUsable` or `AddressNotAssigned`.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::diagnostic::{Diagnostic, DiagnosticReason};
use crate::gateway_api::Gateway;
use crate::store::{Kind, ObjectKey};

/// The addresses one Gateway is served at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Served {
    /// Portico's published addresses (`--publish-service` / `--publish-address`),
    /// shared with every other such Gateway and with the Ingresses.
    Published,
    /// Its own: connections to these reach its routes and nothing else.
    Own(Arc<[IpAddr]>),
}

/// Why a Gateway has no usable address: the reason of its Programmed=False condition
/// and the message.
pub(super) type Unserved = (&'static str, String);

/// One `spec.addresses` entry, as asked.
enum Asked {
    /// This IP address.
    Ip(IpAddr),
    /// Any address of its type, the implementation's choice (an entry without value).
    Any,
    /// A value Portico cannot serve at: the message.
    Unusable(String),
}

/// The addresses of `gateways` (those of ours that are accepted), oldest first.
pub(super) fn assign<'a>(
    gateways: &[(&'a ObjectKey, &'a Gateway)],
    pool: &[IpNet],
    diags: &mut Vec<Diagnostic>,
) -> BTreeMap<&'a ObjectKey, Result<Served, Unserved>> {
    let mut order: Vec<&(&ObjectKey, &Gateway)> = gateways.iter().collect();
    order.sort_by(|(ka, a), (kb, b)| {
        let ta = a.metadata.creation_timestamp.as_ref();
        let tb = b.metadata.creation_timestamp.as_ref();
        (ta, ka).cmp(&(tb, kb))
    });
    let mut taken: HashSet<IpAddr> = HashSet::new();
    let mut out = BTreeMap::new();
    // First the addresses asked for by value, so that no Gateway's own choice is given
    // to another for want of one.
    let mut wanting: Vec<(&ObjectKey, &Gateway, Vec<IpAddr>, usize)> = Vec::new();
    for (key, gw) in order {
        let asked = asked(gw);
        let mut own = Vec::new();
        let mut any = 0;
        let mut unusable = None;
        for (i, a) in asked.into_iter().enumerate() {
            let problem = match a {
                Asked::Any => {
                    any += 1;
                    continue;
                }
                Asked::Unusable(message) => message,
                Asked::Ip(ip) if !in_pool(pool, ip) => {
                    if pool.is_empty() {
                        format!("{ip} cannot be assigned: no --gateway-address-pool is set")
                    } else {
                        format!("{ip} is not in --gateway-address-pool")
                    }
                }
                Asked::Ip(ip) if taken.contains(&ip) || own.contains(&ip) => {
                    format!("{ip} is already another Gateway's")
                }
                Asked::Ip(ip) => {
                    own.push(ip);
                    continue;
                }
            };
            diags.push(Diagnostic::error(
                Kind::Gateway,
                key,
                format!("spec.addresses[{i}]"),
                DiagnosticReason::GatewayUnsupported,
                format!("{problem}; Gateway not served"),
            ));
            unusable.get_or_insert(problem);
        }
        if let Some(problem) = unusable {
            out.insert(*key, Err(("AddressNotUsable", problem)));
            continue;
        }
        taken.extend(own.iter().copied());
        let listed = gw
            .spec
            .rest
            .get("addresses")
            .is_some_and(|a| a.as_array().is_some_and(|a| !a.is_empty()));
        // With a pool, a Gateway that asks for nothing gets an address of its own too.
        if !listed && !pool.is_empty() {
            any = 1;
        }
        if any == 0 && own.is_empty() {
            out.insert(*key, Ok(Served::Published));
        } else if any == 0 {
            out.insert(*key, Ok(Served::Own(own.into())));
        } else if pool.is_empty() {
            out.insert(*key, Ok(Served::Published));
        } else {
            wanting.push((key, gw, own, any));
        }
    }
    for (key, gw, mut own, any) in wanting {
        let remembered = status_addresses(gw);
        for _ in 0..any {
            let free = |ip: &IpAddr| !taken.contains(ip) && !own.contains(ip);
            let next = remembered
                .iter()
                .copied()
                .find(|ip| in_pool(pool, *ip) && free(ip))
                .or_else(|| pool.iter().flat_map(IpNet::hosts).find(free));
            match next {
                Some(ip) => own.push(ip),
                None => break,
            }
        }
        if own.len() < any {
            let message = "--gateway-address-pool has no free address left".to_owned();
            diags.push(Diagnostic::error(
                Kind::Gateway,
                key,
                "spec.addresses",
                DiagnosticReason::GatewayUnsupported,
                format!("{message}; Gateway not served"),
            ));
            out.insert(key, Err(("AddressNotAssigned", message)));
            continue;
        }
        taken.extend(own.iter().copied());
        out.insert(key, Ok(Served::Own(own.into())));
    }
    out
}

/// The entries of `spec.addresses` (whose types are known: others refused the Gateway
/// before this).
fn asked(gw: &Gateway) -> Vec<Asked> {
    let Some(list) = gw.spec.rest.get("addresses").and_then(|a| a.as_array()) else {
        return Vec::new();
    };
    list.iter()
        .map(|addr| {
            let type_ = addr
                .get("type")
                .and_then(|t| t.as_str())
                .unwrap_or("IPAddress");
            let value = addr.get("value").and_then(|v| v.as_str()).unwrap_or("");
            match (type_, value) {
                (_, "") => Asked::Any,
                ("IPAddress", v) => match v.parse::<IpAddr>() {
                    Ok(ip) => Asked::Ip(ip.to_canonical()),
                    Err(_) => Asked::Unusable(format!("{v:?} is not an IP address")),
                },
                (t, v) => Asked::Unusable(format!(
                    "{t} {v:?} cannot be assigned: Portico serves Gateways at IP addresses"
                )),
            }
        })
        .collect()
}

/// The IP addresses the Gateway's current status shows.
fn status_addresses(gw: &Gateway) -> Vec<IpAddr> {
    gw.status
        .as_ref()
        .and_then(|s| s.get("addresses"))
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
        .filter_map(|a| a.get("value")?.as_str()?.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect()
}

fn in_pool(pool: &[IpNet], ip: IpAddr) -> bool {
    pool.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gateway(name: &str, created: &str, addresses: Option<serde_json::Value>) -> Gateway {
        let mut doc = json!({
            "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
            "spec": {"gatewayClassName": "portico", "listeners": []},
        });
        if let Some(a) = addresses {
            doc["spec"]["addresses"] = a;
        }
        serde_json::from_value(doc).expect("gateway")
    }

    fn run(gws: &[(ObjectKey, Gateway)], pool: &[&str]) -> Vec<(String, Result<Served, Unserved>)> {
        let pool: Vec<IpNet> = pool.iter().map(|p| p.parse().expect("net")).collect();
        let refs: Vec<(&ObjectKey, &Gateway)> = gws.iter().map(|(k, g)| (k, g)).collect();
        let mut diags = Vec::new();
        assign(&refs, &pool, &mut diags)
            .into_iter()
            .map(|(k, v)| (k.name.clone(), v))
            .collect()
    }

    fn own(list: &[&str]) -> Result<Served, Unserved> {
        Ok(Served::Own(
            list.iter().map(|a| a.parse().expect("ip")).collect(),
        ))
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("ns", name)
    }

    #[test]
    fn without_a_pool_gateways_share_the_published_addresses() {
        let gws = [
            (key("a"), gateway("a", "2024-01-01T00:00:00Z", None)),
            (
                key("b"),
                gateway(
                    "b",
                    "2024-01-01T00:00:00Z",
                    Some(json!([{"type": "IPAddress"}])),
                ),
            ),
            (
                key("c"),
                gateway(
                    "c",
                    "2024-01-01T00:00:00Z",
                    Some(json!([{"value": "10.0.0.1"}])),
                ),
            ),
        ];
        let got = run(&gws, &[]);
        assert_eq!(got[0].1, Ok(Served::Published));
        assert_eq!(got[1].1, Ok(Served::Published));
        let Err(("AddressNotUsable", message)) = &got[2].1 else {
            panic!("{:?}", got[2]);
        };
        assert!(message.contains("no --gateway-address-pool"), "{message}");
    }

    #[test]
    fn values_asked_for_go_first_and_the_oldest_claim_wins() {
        // `new` is newer than `old` but asks first in key order; `plain` asks for none.
        let gws = [
            (
                key("new"),
                gateway(
                    "new",
                    "2024-02-01T00:00:00Z",
                    Some(json!([{"value": "127.0.1.1"}])),
                ),
            ),
            (
                key("old"),
                gateway(
                    "old",
                    "2024-01-01T00:00:00Z",
                    Some(json!([{"value": "127.0.1.1"}])),
                ),
            ),
            (key("plain"), gateway("plain", "2023-01-01T00:00:00Z", None)),
        ];
        let got = run(&gws, &["127.0.1.0/24"]);
        assert!(
            matches!(&got[0].1, Err(("AddressNotUsable", m)) if m.contains("already")),
            "{got:?}"
        );
        assert_eq!(got[1].1, own(&["127.0.1.1"]));
        // The oldest of all, but without a value: the next free one, not the claimed one.
        assert_eq!(got[2].1, own(&["127.0.1.2"]));
    }

    #[test]
    fn an_address_outside_the_pool_or_of_another_type_is_not_usable() {
        let gws = [
            (
                key("out"),
                gateway(
                    "out",
                    "2024-01-01T00:00:00Z",
                    Some(json!([{"value": "192.0.2.1"}, {"value": "127.0.1.9"}])),
                ),
            ),
            (
                key("name"),
                gateway(
                    "name",
                    "2024-01-01T00:00:00Z",
                    Some(json!([{"type": "Hostname", "value": "lb.example.com"}])),
                ),
            ),
            (
                key("bad"),
                gateway(
                    "bad",
                    "2024-01-01T00:00:00Z",
                    Some(json!([{"type": "IPAddress", "value": "300.1.1.1"}])),
                ),
            ),
        ];
        let got = run(&gws, &["127.0.1.0/24"]);
        for (name, result) in &got {
            assert!(
                matches!(result, Err(("AddressNotUsable", _))),
                "{name}: {result:?}"
            );
        }
    }

    #[test]
    fn a_gateway_keeps_the_address_its_status_shows_and_an_empty_pool_refuses() {
        let mut moved = gateway("b", "2024-02-01T00:00:00Z", None);
        moved.status = Some(json!({"addresses": [{"type": "IPAddress", "value": "127.0.1.7"}]}));
        let gws = [
            (
                key("a"),
                gateway(
                    "a",
                    "2024-01-01T00:00:00Z",
                    Some(json!([{"type": "IPAddress"}])),
                ),
            ),
            (key("b"), moved),
            (key("c"), gateway("c", "2024-03-01T00:00:00Z", None)),
        ];
        let got = run(&gws, &["127.0.1.0/30"]);
        assert_eq!(got[0].1, own(&["127.0.1.1"]));
        assert_eq!(
            got[1].1,
            own(&["127.0.1.2"]),
            "127.0.1.7 is outside the pool"
        );
        assert!(
            matches!(&got[2].1, Err(("AddressNotAssigned", _))),
            "{got:?}"
        );
        let got = run(&gws, &["127.0.1.0/24"]);
        assert_eq!(got[1].1, own(&["127.0.1.7"]));
    }
}
