//! `corelog repair`: a partition that start-up found damaged stays offline, its
//! files kept byte for byte, until someone decides what to lose. Without
//! `--truncate-at-corruption` this command only says what is damaged and what a
//! repair would remove (exit 1 if anything is damaged, 0 if not); with it, the log is
//! cut right before the first damage (see `PartitionLog::repair`) and the partition
//! is served again at the next start. Every record from the damage on is lost,
//! acknowledged or not. The broker must be stopped while it runs: the command takes
//! the data directory's lock, so it refuses to run beside a broker (naming its pid)
//! and a broker started meanwhile is refused.

use std::path::PathBuf;

use anyhow::Context;
use corelog_engine::shard::repair_partition;
use corelog_engine::{PartitionId, TopicName, TopicPartition};

use crate::UsageError;

#[derive(clap::Args, Debug)]
pub struct RepairArgs {
    /// The broker's data directory (the broker must be stopped).
    #[arg(long)]
    data_dir: PathBuf,
    /// Topic of the damaged partition.
    #[arg(long)]
    topic: String,
    /// Index of the damaged partition.
    #[arg(long)]
    partition: i32,
    /// Consent: delete every record from the first damage to the end of the
    /// partition. Without it nothing is changed.
    #[arg(long)]
    truncate_at_corruption: bool,
}

pub fn run(args: RepairArgs) -> anyhow::Result<()> {
    let topic = TopicName::new(args.topic.clone()).map_err(|e| UsageError(format!("--topic: {e}")))?;
    if args.partition < 0 {
        return Err(UsageError(format!("--partition {} must be 0 or more", args.partition)).into());
    }
    let partition = TopicPartition::new(topic, PartitionId(args.partition));
    let report = repair_partition(&args.data_dir, &partition, args.truncate_at_corruption)
        .with_context(|| format!("repairing {partition} in {}", args.data_dir.display()))?;
    if report.damage.is_empty() {
        println!("{partition}: no damage found; nothing changed");
        return Ok(());
    }
    for damage in &report.damage {
        println!("{partition}: damage: {damage}");
    }
    let verb = if report.applied { "removed" } else { "would remove" };
    match report.truncated_at {
        Some(offset) => println!(
            "{partition}: {verb} every record from offset {offset} on: {} bytes of segment data",
            report.log_bytes_removed
        ),
        None => println!("{partition}: {verb} {} bytes of segment data", report.log_bytes_removed),
    }
    for path in &report.files_removed {
        println!("{partition}: {verb} {}", path.display());
    }
    if report.applied {
        println!("{partition}: repaired; the broker serves it again from its next start");
        Ok(())
    } else {
        anyhow::bail!(
            "{partition} is damaged and nothing was changed; to cut it at the damage, run again with \
             --truncate-at-corruption"
        )
    }
}
