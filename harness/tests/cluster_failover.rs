//! Failover of a three-process cluster under a real client (librdkafka):
//!
//! - the leader of a replicated partition SIGKILLed ten times in a row (restarted
//!   each time, on its data) while an idempotent `acks=all` producer writes: every
//!   acknowledged message is read back exactly once, at the offset it was
//!   acknowledged at, in order per partition, with no offset skipped;
//! - with `min.insync.replicas=2` and the only follower paused (SIGSTOP), the leader
//!   refuses `acks=all` appends with NOT_ENOUGH_REPLICAS instead of taking them
//!   silently, and takes them again once the follower is back in sync;
//!   DescribeLogDirs lists the partition on its two replicas, not on the third broker.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{create_replicated_topic, metadata, partitions_of, topic_name, ClusterProcesses, SETTLE_TIMEOUT};
use common::raw::RawConnection;
use common::*;
use corelog_engine::batch::build_value_batch;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{DescribeLogDirsRequest, ProduceRequest};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Sessions expire 6 s after a broker's last heartbeat (not below the quorum's 5 s
/// request timeout, see tests/cluster.rs); a follower two seconds behind leaves the ISR.
const CONFIG_YAML: &str =
    "broker_session_timeout_ms: 6000\nbroker_heartbeat_interval_ms: 500\nreplica_lag_time_max_ms: 2000\n";
const KILLS: usize = 10;
const NOT_ENOUGH_REPLICAS: i16 = 19;

/// Partition `partition`'s (leader, ISR) as `node` sees it; leader -1 when none.
fn leadership(node: &BrokerProcess, topic: &str, partition: usize) -> (i32, Vec<i32>) {
    let partitions = partitions_of(&metadata(node, Some(&[topic])), topic);
    partitions.get(partition).map_or((-1, Vec::new()), |p| (p.leader_id.0, p.isr_nodes.iter().map(|id| id.0).collect()))
}

/// A producer thread writing `m-<n>` values to `topic` until stopped, then waiting
/// for every delivery report: each value with where it was acknowledged, or why not.
fn start_producer(
    bootstrap: String,
    topic: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(String, DeliveryOutcome)>> {
    std::thread::spawn(move || {
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("broker.address.family", "v4")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Long enough to ride out every failover: nothing may time out.
            .set("message.timeout.ms", "120000")
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "500")
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        let mut deliveries = Vec::new();
        let mut next = 0u64;
        while !stop.load(Ordering::Acquire) {
            // About 1000 messages a second, over both partitions.
            for _ in 0..20 {
                let value = format!("m-{next:08}");
                let key = next.to_string();
                let record = FutureRecord::to(topic).key(&key).payload(&value);
                match producer.send_result(record) {
                    Ok(delivery) => deliveries.push((value, delivery)),
                    Err((error, _)) => panic!("queueing {value}: {error}"),
                }
                next += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        block_on(async {
            let mut outcomes = Vec::with_capacity(deliveries.len());
            for (value, delivery) in deliveries {
                let outcome = match delivery.await {
                    Ok(Ok(delivery)) => Ok((delivery.partition, delivery.offset)),
                    Ok(Err((error, _))) => Err(error.to_string()),
                    Err(_) => Err("the producer dropped the delivery report".to_string()),
                };
                outcomes.push((value, outcome));
            }
            outcomes
        })
    })
}

#[test]
fn ten_leader_kills_in_a_row_lose_and_duplicate_nothing_acknowledged() {
    const TOPIC: &str = "kills";
    let _watchdog = Watchdog::new("cluster-kills", Duration::from_secs(420));
    let mut cluster = ClusterProcesses::start_live("cluster-kills", 3, CONFIG_YAML);
    create_replicated_topic(&cluster.nodes[0], TOPIC, 2, 3, &[]);
    let bootstrap = cluster.bootstrap();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = start_producer(bootstrap, TOPIC, stop.clone());

    let mut killed = Vec::new();
    for round in 0..KILLS {
        // Every replica in sync before the next kill, so a new leader can come from
        // the ISR; and every node agreeing (a node just restarted may still be
        // catching up with the metadata).
        let mut current = (-1, Vec::new());
        wait_until(&format!("round {round}: partition 0 led with three in sync"), SETTLE_TIMEOUT, || {
            current = leadership(&cluster.nodes[0], TOPIC, 0);
            current.0 >= 0
                && current.1.len() == 3
                && cluster.nodes[1..].iter().all(|node| leadership(node, TOPIC, 0) == current)
        });
        let leader = current.0;
        // Observe from a broker that stays up.
        let observer = (0..3).find(|id| *id != leader as usize).expect("another broker");
        cluster.nodes[leader as usize].kill();
        let killed_at = Instant::now();
        wait_until(
            &format!("round {round}: a new leader of partition 0 after killing {leader}"),
            SETTLE_TIMEOUT,
            || {
                let (now, _) = leadership(&cluster.nodes[observer], TOPIC, 0);
                now >= 0 && now != leader
            },
        );
        killed.push((leader, killed_at.elapsed()));
        cluster.nodes[leader as usize].restart();
    }
    stop.store(true, Ordering::Release);
    let outcomes = producer.join().expect("the producer thread");
    eprintln!("killed leaders (broker, time to a new leader): {killed:?}");

    let failed: Vec<_> = outcomes.iter().filter(|(_, o)| o.is_err()).take(5).collect();
    assert!(failed.is_empty(), "messages not acknowledged (the producer retries for 120 s): {failed:?}");
    let acknowledged: BTreeMap<String, (i32, i64)> =
        outcomes.iter().map(|(value, outcome)| (value.clone(), *outcome.as_ref().expect("acknowledged"))).collect();
    assert!(acknowledged.len() > 1_000, "the producer kept writing: {}", acknowledged.len());

    let survivor = &cluster.nodes[0];
    let read = read_partitions(survivor, TOPIC, 2, Duration::from_secs(60));
    let mut seen = BTreeSet::new();
    for (partition, records) in &read {
        let mut last_sequence = None;
        for (index, record) in records.iter().enumerate() {
            assert_eq!(record.offset, index as i64, "{TOPIC}/{partition}: offsets contiguous from 0");
            let value = record.value_text();
            assert!(seen.insert(value.clone()), "{value} is in the log twice");
            assert_eq!(
                acknowledged.get(&value),
                Some(&(*partition, record.offset)),
                "{value} at {partition}/{} was acknowledged elsewhere (or never)",
                record.offset
            );
            // One producer, in order per partition.
            let sequence: u64 = value[2..].parse().expect("m-<n>");
            assert!(last_sequence < Some(sequence), "{TOPIC}/{partition}: {value} after {last_sequence:?}");
            last_sequence = Some(sequence);
        }
    }
    let missing: Vec<_> = acknowledged.keys().filter(|value| !seen.contains(*value)).take(5).collect();
    assert!(missing.is_empty(), "acknowledged but not in the log: {missing:?} ({} in all)", acknowledged.len());
    for node in &mut cluster.nodes {
        node.stop();
    }
}

/// The error code of a Produce v9 with `acks` of one batch to `topic`/0.
fn produce_code(node: &BrokerProcess, topic: &str, acks: i16) -> i16 {
    let batch = build_value_batch(now_timestamp(), 1, 10);
    let request = ProduceRequest::default().with_acks(acks).with_timeout_ms(10_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch.into()))]),
    ]);
    let response = RawConnection::open(node).request(&request, 9);
    response.responses[0].partition_responses[0].error_code
}

#[test]
fn a_paused_follower_below_min_insync_replicas_gets_acks_all_refused_not_silently_accepted() {
    const TOPIC: &str = "paused";
    let _watchdog = Watchdog::new("cluster-paused", Duration::from_secs(180));
    let mut cluster = ClusterProcesses::start_live("cluster-paused", 3, CONFIG_YAML);
    create_replicated_topic(&cluster.nodes[0], TOPIC, 1, 2, &[("min.insync.replicas", "2")]);
    let mut current = (-1, Vec::new());
    wait_until("the partition led with both replicas in sync", SETTLE_TIMEOUT, || {
        current = leadership(&cluster.nodes[0], TOPIC, 0);
        current.0 >= 0 && current.1.len() == 2
    });
    let (leader, isr) = current;
    let follower = *isr.iter().find(|id| **id != leader).expect("a follower");
    let leader_node = &cluster.nodes[leader as usize];
    // DescribeLogDirs lists a partition on its two replicas, not on the third broker.
    let outsider = (0..3).find(|id| !isr.contains(id)).expect("a broker without a replica");
    for (id, node) in cluster.nodes.iter().enumerate() {
        let request = DescribeLogDirsRequest::default().with_topics(None);
        let response = RawConnection::open(node).request(&request, 4);
        let listed = response.results[0].topics.iter().any(|t| t.name.0.as_str() == TOPIC);
        assert_eq!(listed, id as i32 != outsider, "broker {id} lists {TOPIC}: {listed}");
    }
    wait_until("the leader to take acks=all", SETTLE_TIMEOUT, || produce_code(leader_node, TOPIC, -1) == 0);

    // SIGSTOP the follower: it stops fetching, leaves the ISR after the lag time
    // (or is fenced when its session expires), and the leader refuses acks=all.
    let pid = cluster.nodes[follower as usize].pid() as libc::pid_t;
    // SAFETY: sending a signal to a child process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP");
    let mut last = 0;
    let refused = (|| {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while Instant::now() < deadline {
            last = produce_code(leader_node, TOPIC, -1);
            if last == NOT_ENOUGH_REPLICAS {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    })();
    let (_, isr_while_paused) = leadership(leader_node, TOPIC, 0);
    // acks=1 does not wait for replicas: taken while the ISR is short.
    let acks_1 = produce_code(leader_node, TOPIC, 1);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0, "SIGCONT");
    assert!(refused, "acks=all with the only follower paused answered {last}, not NOT_ENOUGH_REPLICAS");
    assert_eq!(isr_while_paused, vec![leader], "the paused follower left the ISR");
    assert_eq!(acks_1, 0, "acks=1 while the ISR is short");
    // The follower catches up and rejoins; acks=all is taken again.
    wait_until("the follower back in the ISR", SETTLE_TIMEOUT, || leadership(leader_node, TOPIC, 0).1.len() == 2);
    wait_until("acks=all taken again", SETTLE_TIMEOUT, || produce_code(leader_node, TOPIC, -1) == 0);
    for node in &mut cluster.nodes {
        node.stop();
    }
}
