//! Where a run happened: recorded in every result, because a number without its
//! machine is not a result. On a shared 2-core box the broker, its clients and the
//! harness compete for the same cores; the pinning line says so.

use corelog_reports::model::{BrokerCpus, Environment};

use crate::workload::{Cluster, DriverKind, Workload};

/// The machine, and where the brokers the run started (`broker_cpus`, from the
/// target) ran their shards.
pub fn collect(workload: &Workload, broker_cpus: Vec<BrokerCpus>) -> Environment {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get()) as u32;
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|info| {
        info.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|m| m.trim().to_string())
    });
    let memory_bytes = std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
        info.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    let pinning = pinning(workload, &broker_cpus, cores);
    let read = |path: &str| std::fs::read_to_string(path).ok().map(|s| s.trim().to_string());
    Environment {
        cpu_model,
        cpu_cores: Some(cores),
        pinning: Some(pinning),
        broker_cpus,
        kernel: read("/proc/sys/kernel/osrelease"),
        os: read("/etc/os-release").and_then(|text| {
            text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_string())
        }),
        memory_bytes,
        hostname: read("/proc/sys/kernel/hostname"),
        corelog_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        git_commit: option_env!("CORELOG_GIT_COMMIT").map(str::to_string),
        extra: Default::default(),
    }
}

/// How threads were pinned, in words: where each started broker's shards ran
/// (`broker-0 on CPU 0, broker-1 on CPU 1`), and that the clients float.
fn pinning(workload: &Workload, broker_cpus: &[BrokerCpus], cores: u32) -> String {
    let placed = |broker: &BrokerCpus| match broker.cpus.as_str() {
        corelog_engine::cpus::UNPINNED => format!("{} unpinned", broker.broker),
        cpus if cpus.contains(['-', ',']) => format!("{} on CPUs {cpus}", broker.broker),
        cpu => format!("{} on CPU {cpu}", broker.broker),
    };
    let brokers = broker_cpus.iter().map(placed).collect::<Vec<_>>().join(", ");
    let shards = |broker: &BrokerCpus| format!("{} shard(s)", broker.shards);
    match (&workload.driver, &workload.cluster, broker_cpus.first()) {
        (_, Cluster::External(_), _) | (_, _, None) => {
            format!("external cluster; clients unpinned on this machine's {cores} cores")
        }
        (DriverKind::Embedded, Cluster::Local(_), Some(engine)) => format!(
            "embedded engine, {}: {brokers}; producer/consumer threads unpinned, sharing all {cores} cores",
            shards(engine)
        ),
        (DriverKind::Kafka, Cluster::Local(_), Some(first)) => format!(
            "{} local broker(s), {} each: {brokers}; clients (librdkafka threads) unpinned, sharing all {cores} \
             cores with the brokers",
            broker_cpus.len(),
            shards(first)
        ),
    }
}

/// `YYYYMMDDTHHMMSSZ` in UTC, for result directory names.
pub fn utc_timestamp_for_path() -> String {
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", of_day / 3600, of_day % 3600 / 60, of_day % 60)
}
