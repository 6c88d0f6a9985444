//! A full disk is survivable: a broker whose data directory is on a small ext4 file
//! system (an image file loop-mounted by the test) refuses produce with
//! KAFKA_STORAGE_ERROR once the disk is full, loses nothing it acknowledged,
//! accepts produce again once DeleteRecords freed space, and starts again on a disk
//! that is still full.
//!
//! Mounting needs root (CAP_SYS_ADMIN) and the `loop` driver. Without them the test
//! fails under `CI=true` and otherwise says loudly that it did not run.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "full-disk";
/// Small enough to fill in seconds, large enough for ext4's own metadata.
const FILE_SYSTEM_MIB: u64 = 48;
/// Sealed segments are what DeleteRecords can free.
const SEGMENT_BYTES: &str = "1048576";
const VALUE_BYTES: usize = 16 << 10;

/// A small ext4 file system on an image file, mounted for the test's life.
struct LoopMount {
    image: PathBuf,
    mount_point: PathBuf,
}

impl LoopMount {
    fn new(name: &str, size_mib: u64) -> Result<LoopMount, String> {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("loop-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
        let image = root.join("fs.img");
        let mount_point = root.join("mnt");
        std::fs::create_dir_all(&mount_point).map_err(|e| format!("creating {}: {e}", mount_point.display()))?;
        let file = std::fs::File::create(&image).map_err(|e| format!("creating {}: {e}", image.display()))?;
        file.set_len(size_mib << 20).map_err(|e| format!("sizing {}: {e}", image.display()))?;
        // No blocks reserved for root: the broker runs as root in CI and would use them.
        run("mkfs.ext4", &["-q", "-F", "-m", "0", &image.to_string_lossy()])?;
        run("mount", &["-o", "loop", &image.to_string_lossy(), &mount_point.to_string_lossy()])?;
        Ok(LoopMount { image, mount_point })
    }

    /// Takes every byte the file system has left with a file of its own, so nothing
    /// (not even a 4 KiB probe) fits any more.
    fn fill_up(&self) {
        use std::io::Write;
        let path = self.mount_point.join("filler");
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("creating the filler");
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).and_then(|()| file.sync_data()).is_ok() {}
        let mut small = [0u8; 512];
        small.fill(1);
        while file.write_all(&small[..1]).and_then(|()| file.sync_data()).is_ok() {}
        assert_eq!(self.free_bytes(), 0, "the filler left room");
    }

    /// Bytes the file system still has for files.
    fn free_bytes(&self) -> u64 {
        let path = std::ffi::CString::new(self.mount_point.to_string_lossy().as_bytes()).expect("no NUL");
        // SAFETY: statvfs is plain C data (integers), so all-zero is a valid value.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: statvfs(3) reads the NUL-terminated `path` and writes only into the
        // struct we pass by valid pointer.
        let status = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
        assert_eq!(status, 0, "statvfs: {}", std::io::Error::last_os_error());
        stat.f_bavail * stat.f_frsize
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = run("umount", &["-l", &self.mount_point.to_string_lossy()]);
        if let Some(root) = self.image.parent() {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program).args(args).output().map_err(|e| format!("running {program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {args:?}: {} {}", output.status, String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// The loop mount, or `None` (with a loud notice) where this machine cannot make
/// one and this is not CI.
fn mount_or_explain(name: &str) -> Option<LoopMount> {
    match LoopMount::new(name, FILE_SYSTEM_MIB) {
        Ok(mount) => Some(mount),
        Err(error) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("NOT RUN: {name} needs root and loop devices to mount a small file system ({error})");
            None
        }
        Err(error) => panic!("{name}: cannot loop-mount a small file system, which this test needs: {error}"),
    }
}

fn producer(broker: &BrokerProcess) -> FutureProducer {
    client_config(broker)
        .set("acks", "all")
        .set("linger.ms", "0")
        // A refused write is reported, not retried until space comes back.
        .set("message.send.max.retries", "0")
        .set("message.timeout.ms", "10000")
        .create()
        .expect("creating a producer")
}

fn value(index: usize) -> Vec<u8> {
    let mut value = format!("message {index} ").into_bytes();
    value.resize(VALUE_BYTES, b'a' + (index % 26) as u8);
    value
}

/// Produces batches of messages until the broker refuses some; returns what it
/// acknowledged (offset -> message index) and the first refusal.
fn produce_until_full(
    broker: &BrokerProcess,
    next_index: &mut usize,
    acknowledged: &mut BTreeMap<i64, usize>,
) -> String {
    let producer = producer(broker);
    for _ in 0..200 {
        let first = *next_index;
        let messages: Vec<Outgoing> = (first..first + 20).map(|i| (None, value(i))).collect();
        *next_index += messages.len();
        let outcomes = produce(&producer, TOPIC, Some(0), &messages, Duration::from_secs(60));
        let mut refusal = None;
        for (i, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok((_, offset)) => {
                    assert!(acknowledged.insert(offset, first + i).is_none(), "offset {offset} acknowledged twice");
                }
                Err(error) => refusal = refusal.or(Some(error)),
            }
        }
        if let Some(refusal) = refusal {
            return refusal;
        }
    }
    panic!("the disk never filled up: {} messages acknowledged", acknowledged.len());
}

/// Every acknowledged message at or past the log start is served, at its offset.
fn assert_all_acknowledged_readable(broker: &BrokerProcess, acknowledged: &BTreeMap<i64, usize>, what: &str) {
    let stored = read_partitions(broker, TOPIC, 1, Duration::from_secs(60));
    let by_offset: BTreeMap<i64, &Record> = stored[&0].iter().map(|r| (r.offset, r)).collect();
    let log_start = stored[&0].first().map_or(i64::MAX, |r| r.offset);
    for (offset, index) in acknowledged.range(log_start..) {
        let record = by_offset.get(offset).unwrap_or_else(|| panic!("{what}: acknowledged offset {offset} is gone"));
        assert_eq!(record.value.as_deref(), Some(value(*index).as_slice()), "{what}: offset {offset} changed");
    }
}

#[test]
fn a_full_disk_refuses_produce_keeps_what_was_acknowledged_and_recovers_after_delete_records() {
    let _watchdog = Watchdog::new("disk_full", Duration::from_secs(300));
    let Some(mount) = mount_or_explain("disk-full") else { return };
    let mut options = BrokerOptions::new("disk-full");
    options.cores = 1;
    options.data_dir = Some(mount.mount_point.join("data"));
    let mut broker = BrokerProcess::start(options);
    block_on(create_topic(&broker, TOPIC, 1, &[("segment.bytes", SEGMENT_BYTES), ("retention.ms", "-1")]));

    let mut next_index = 0;
    let mut acknowledged = BTreeMap::new();
    let refusal = produce_until_full(&broker, &mut next_index, &mut acknowledged);
    assert!(
        refusal.contains("KafkaStorageError") || refusal.to_lowercase().contains("disk error"),
        "a full disk is KAFKA_STORAGE_ERROR, got {refusal}\n{}",
        broker.log_tail()
    );
    assert!(acknowledged.len() > 100, "only {} messages fit", acknowledged.len());
    assert!(mount.free_bytes() < 2 << 20, "the file system is not full: {} bytes free", mount.free_bytes());
    assert_all_acknowledged_readable(&broker, &acknowledged, "on a full disk");

    // DeleteRecords on a disk full to the last byte (no room even for its log start
    // checkpoint) frees the sealed segments below the new log start; produce works
    // again.
    mount.fill_up();
    let high = *acknowledged.keys().next_back().expect("acknowledged") + 1;
    let mut below = TopicPartitionList::new();
    below.add_partition_offset(TOPIC, 0, Offset::Offset(high)).expect("valid offset");
    let admin = admin_client(&broker);
    let deleted = block_on(admin.delete_records(&below, &admin_options())).expect("DeleteRecords request");
    let element = deleted.elements_for_topic(TOPIC).into_iter().next().expect("a result for partition 0");
    assert!(element.error().is_ok(), "DeleteRecords on a full disk: {:?}\n{}", element.error(), broker.log_tail());
    assert!(mount.free_bytes() > 8 << 20, "DeleteRecords freed only {} bytes", mount.free_bytes());
    let messages: Vec<Outgoing> = (next_index..next_index + 10).map(|i| (None, value(i))).collect();
    let outcomes = produce(&producer(&broker), TOPIC, Some(0), &messages, Duration::from_secs(60));
    for (i, (_, offset)) in expect_all_acknowledged(TOPIC, &outcomes).into_iter().enumerate() {
        acknowledged.insert(offset, next_index + i);
    }
    next_index += messages.len();

    // Full again, to the last byte, then killed and restarted on the full disk: it
    // starts, and every acknowledged message past the log start is still served.
    produce_until_full(&broker, &mut next_index, &mut acknowledged);
    mount.fill_up();
    broker.kill();
    broker.restart();
    assert_all_acknowledged_readable(&broker, &acknowledged, "after a restart on a full disk");
    // And a clean stop and start on the full disk.
    broker.stop();
    broker.restart();
    assert_all_acknowledged_readable(&broker, &acknowledged, "after a clean restart on a full disk");
}
