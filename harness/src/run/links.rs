//! The links between the brokers of a started cluster, each through a fault proxy
//! of its own, so that faults can cut brokers off from each other and not only
//! from the clients.
//!
//! A broker reaches another in two ways: as a metadata quorum peer (its
//! controller listener, named in `--controller-quorum-voters`) and as a follower
//! fetching from a leader (its client listener). For every ordered pair of
//! brokers `from → to` there is one proxy per way, and `from` is told to use
//! them: its voters list names the quorum proxy for every other voter, and
//! `--peer-addresses` the replication proxy. A proxy's upstream is set when the
//! listener it stands for is known (controller ports before the brokers start,
//! client listeners once each broker has said where it listens); until then a
//! connection through it is closed at once, and the broker tries again.
//!
//! [`PeerLinks::cut`] blackholes both ways of both kinds of link between two
//! brokers: like a network partition that heals before TCP gives up, the bytes
//! held back are delivered once the cut is undone.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

use crate::proxy::{Directions, FaultId, FaultProxy, NetFault};

/// What a link carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Way {
    /// Metadata quorum traffic, to the controller listener.
    Quorum,
    /// Follower fetches, to the client listener.
    Replication,
}

/// Proxies on every link between the brokers of one cluster.
pub struct PeerLinks {
    proxies: BTreeMap<(u32, u32, Way), Arc<FaultProxy>>,
}

/// Undoes one [`PeerLinks::cut`].
pub struct Cut(Vec<(Arc<FaultProxy>, FaultId)>);

impl PeerLinks {
    /// A proxy for each way and ordered pair of `node_ids`, none forwarding yet.
    pub fn start(node_ids: &[u32]) -> anyhow::Result<PeerLinks> {
        let listen: SocketAddr = "127.0.0.1:0".parse().expect("a socket address");
        // Until the real upstream is known: the discard port, refused on loopback.
        let unbound: SocketAddr = "127.0.0.1:9".parse().expect("a socket address");
        let mut proxies = BTreeMap::new();
        for &from in node_ids {
            for &to in node_ids.iter().filter(|&&to| to != from) {
                for way in [Way::Quorum, Way::Replication] {
                    let name = format!("broker-{from}->broker-{to} {}", way.name());
                    let proxy = FaultProxy::start(&name, listen, unbound)
                        .with_context(|| format!("starting the fault proxy of link {name}"))?;
                    // Refused connections while the cluster starts are expected, and
                    // cuts are logged here, once for the pair.
                    proxy.quiet();
                    proxies.insert((from, to, way), Arc::new(proxy));
                }
            }
        }
        Ok(PeerLinks { proxies })
    }

    /// The voters list broker `from` is given: its own controller listener, and
    /// the quorum link to each other voter. `controllers` holds every voter's
    /// controller listener, by node id.
    pub fn voters_for(&self, from: u32, controllers: &BTreeMap<u32, SocketAddr>) -> String {
        controllers
            .iter()
            .map(|(&to, &listener)| match self.proxies.get(&(from, to, Way::Quorum)) {
                Some(proxy) if to != from => format!("{to}@{}", proxy.local_addr()),
                _ => format!("{to}@{listener}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `--peer-addresses` for broker `from`: the replication link to each other broker.
    pub fn peer_addresses_for(&self, from: u32) -> String {
        self.links_from(from, Way::Replication)
            .map(|(to, proxy)| format!("{to}@{}", proxy.local_addr()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every quorum link to `to` forwards to its controller listener from now on.
    pub fn set_controller(&self, to: u32, listener: SocketAddr) {
        self.set_upstream(to, Way::Quorum, listener);
    }

    /// Every replication link to `to` forwards to its client listener from now on.
    pub fn set_client_listener(&self, to: u32, listener: SocketAddr) {
        self.set_upstream(to, Way::Replication, listener);
    }

    /// Blackholes every link between `a` and `b`, both ways, until the returned
    /// [`Cut`] is given to [`PeerLinks::heal`].
    pub fn cut(&self, a: u32, b: u32) -> anyhow::Result<Cut> {
        tracing::info!("links between broker-{a} and broker-{b}: blackholed both ways");
        let mut added = Vec::new();
        for (from, to) in [(a, b), (b, a)] {
            for way in [Way::Quorum, Way::Replication] {
                let proxy = self
                    .proxies
                    .get(&(from, to, way))
                    .with_context(|| format!("there is no link from broker {from} to broker {to}"))?;
                added.push((proxy.clone(), proxy.add(NetFault::Blackhole { directions: Directions::BOTH })));
            }
        }
        Ok(Cut(added))
    }

    /// Undoes a cut: what its links held back is delivered.
    pub fn heal(cut: Cut) {
        tracing::debug!("healing {} links", cut.0.len());
        for (proxy, id) in cut.0 {
            proxy.remove(id);
        }
    }

    /// Stops every proxy that nobody else holds.
    pub fn shutdown(self) {
        for proxy in self.proxies.into_values() {
            if let Ok(proxy) = Arc::try_unwrap(proxy) {
                proxy.shutdown();
            }
        }
    }

    fn links_from(&self, from: u32, way: Way) -> impl Iterator<Item = (u32, &Arc<FaultProxy>)> {
        self.proxies.iter().filter(move |((f, _, w), _)| *f == from && *w == way).map(|((_, to, _), p)| (*to, p))
    }

    fn set_upstream(&self, to: u32, way: Way, upstream: SocketAddr) {
        for ((_, link_to, link_way), proxy) in &self.proxies {
            if *link_to == to && *link_way == way {
                proxy.set_upstream(upstream);
            }
        }
    }
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Quorum => "quorum",
            Way::Replication => "replication",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    /// An echo server: what a connection sends comes back.
    fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buffer = [0u8; 64];
                    while let Ok(n @ 1..) = stream.read(&mut buffer) {
                        if stream.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        address
    }

    fn round_trip(address: &str, timeout: Duration) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(address)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"ping")?;
        let mut answer = vec![0u8; 4];
        stream.read_exact(&mut answer)?;
        Ok(answer)
    }

    fn address_of(list: &str, node: u32) -> String {
        let entry = list.split(',').find(|e| e.starts_with(&format!("{node}@"))).expect("listed");
        entry.split_once('@').expect("id@address").1.to_string()
    }

    #[test]
    fn each_broker_reaches_the_others_through_its_own_links_and_a_cut_holds_both_ways_until_healed() {
        let links = PeerLinks::start(&[0, 1, 2]).expect("links");
        let (controller, client) = (echo(), echo());
        let controllers: BTreeMap<u32, SocketAddr> = [(0, controller), (1, controller), (2, controller)].into();
        for node in 0..3 {
            links.set_controller(node, controller);
            links.set_client_listener(node, client);
        }
        let voters0 = links.voters_for(0, &controllers);
        assert_eq!(address_of(&voters0, 0), controller.to_string(), "a broker reaches itself directly");
        assert_ne!(address_of(&voters0, 1), controller.to_string(), "and the others through a link");
        assert_ne!(address_of(&voters0, 1), address_of(&links.voters_for(2, &controllers), 1), "one per pair");
        let peers0 = links.peer_addresses_for(0);
        assert!(!peers0.contains("0@"), "{peers0}");
        let quick = Duration::from_secs(5);
        assert_eq!(round_trip(&address_of(&voters0, 1), quick).expect("quorum link 0->1"), b"ping");
        assert_eq!(round_trip(&address_of(&peers0, 2), quick).expect("replication link 0->2"), b"ping");

        let cut = links.cut(0, 1).expect("cut");
        let held = Duration::from_millis(300);
        assert!(round_trip(&address_of(&voters0, 1), held).is_err(), "0->1 is cut");
        assert!(round_trip(&address_of(&links.peer_addresses_for(1), 0), held).is_err(), "1->0 is cut");
        assert_eq!(round_trip(&address_of(&peers0, 2), quick).expect("0->2 untouched"), b"ping");
        assert_eq!(round_trip(&address_of(&links.voters_for(1, &controllers), 2), quick).expect("1->2"), b"ping");
        PeerLinks::heal(cut);
        assert_eq!(round_trip(&address_of(&voters0, 1), quick).expect("healed"), b"ping");
        links.shutdown();
    }
}
