//! The CPUs the shards run on: [`ShardCpus`], from a CPU list in the Linux cpuset
//! syntax ([`CpuList`], `0-1,3`, as `taskset -c`, `isolcpus` and
//! `/sys/devices/system/cpu/online` write it).
//!
//! Shard `i` is pinned to the `i`-th CPU of its list (ascending), wrapping when
//! there are more shards than CPUs; by default the list is every online CPU, so
//! shard `i` runs on CPU `i`. Several brokers on one machine each pin their shard 0
//! to CPU 0 that way, which is why a broker can be given its own CPUs, or none
//! (`unpinned`: the kernel schedules the threads).
//!
//! Limits: a list is a set (order and repeats do not matter, as for the kernel); the
//! strided forms (`taskset`'s `0-7:2`, the kernel's `0-7:1/4`) are refused rather than
//! guessed at, since the two tools read them differently; CPUs are checked against
//! the online ones, not against the process's affinity mask (a broker started under
//! `taskset` is given CPUs within its mask by whoever starts it).

use std::fmt;
use std::str::FromStr;

use crate::error::{EngineError, Result};
use crate::types::ShardId;

/// Where the kernel lists the online CPUs, in the syntax [`CpuList::parse`] reads.
pub const ONLINE_CPUS_PATH: &str = "/sys/devices/system/cpu/online";

/// The highest CPU number a list may name (Linux's `NR_CPUS` is at most 8192).
pub const CPU_ID_MAX: usize = 8191;

/// The word for shards that are not pinned.
pub const UNPINNED: &str = "unpinned";

/// A non-empty set of CPU numbers, ascending and distinct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(Vec<usize>);

impl CpuList {
    /// Reads a CPU list: comma-separated CPU numbers (`3`) and inclusive ranges
    /// (`0-2`), blanks around items allowed, e.g. `0-1,3`. Repeats and overlaps
    /// are merged, as the kernel does; an empty list, an empty item, a backwards
    /// range, a number above [`CPU_ID_MAX`] and a strided range are refused.
    pub fn parse(text: &str) -> std::result::Result<CpuList, String> {
        if text.trim().is_empty() {
            return Err("the CPU list is empty".to_string());
        }
        let mut cpus = Vec::new();
        for item in text.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(format!("{text:?} has an empty item"));
            }
            if item.contains(':') {
                return Err(format!(
                    "{item:?}: strided ranges are not supported (taskset and the kernel read them differently); \
                     list the CPUs instead"
                ));
            }
            let (first, last) = match item.split_once('-') {
                Some((first, last)) => (cpu_number(first.trim(), item)?, cpu_number(last.trim(), item)?),
                None => {
                    let cpu = cpu_number(item, item)?;
                    (cpu, cpu)
                }
            };
            if first > last {
                return Err(format!("{item:?} is a backwards range"));
            }
            cpus.extend(first..=last);
        }
        Ok(CpuList::from_cpus(cpus).expect("a list with an item has a CPU"))
    }

    /// The set of `cpus`, or `None` if there is none.
    pub fn from_cpus(cpus: impl IntoIterator<Item = usize>) -> Option<CpuList> {
        let mut cpus: Vec<usize> = cpus.into_iter().collect();
        cpus.sort_unstable();
        cpus.dedup();
        (!cpus.is_empty()).then_some(CpuList(cpus))
    }

    /// The CPUs, ascending; never empty.
    pub fn cpus(&self) -> &[usize] {
        &self.0
    }

    /// The CPU shard `shard` is pinned to: the shard's index into the list, wrapping.
    pub fn cpu_for(&self, shard: ShardId) -> usize {
        self.0[shard.0 % self.0.len()]
    }

    /// The CPUs of this list that `other` lacks, ascending.
    pub fn missing_from(&self, other: &CpuList) -> Vec<usize> {
        self.0.iter().copied().filter(|cpu| other.0.binary_search(cpu).is_err()).collect()
    }
}

/// `text` as a CPU number, for an error about `item`.
fn cpu_number(text: &str, item: &str) -> std::result::Result<usize, String> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(format!("{item:?} is not a CPU number or range (such as 3 or 0-2)"));
    }
    match text.parse::<usize>() {
        Ok(cpu) if cpu <= CPU_ID_MAX => Ok(cpu),
        _ => Err(format!("CPU {text} is above {CPU_ID_MAX}")),
    }
}

/// The shortest form: runs of consecutive CPUs as ranges (`0-2,5,7-8`).
impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut index = 0;
        while index < self.0.len() {
            let first = self.0[index];
            let mut last = first;
            while index + 1 < self.0.len() && self.0[index + 1] == last + 1 {
                index += 1;
                last = self.0[index];
            }
            let separator = if first == self.0[0] { "" } else { "," };
            match last - first {
                0 => write!(f, "{separator}{first}")?,
                _ => write!(f, "{separator}{first}-{last}")?,
            }
            index += 1;
        }
        Ok(())
    }
}

impl FromStr for CpuList {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<CpuList, String> {
        CpuList::parse(text)
    }
}

/// The CPUs online now, as the kernel lists them in [`ONLINE_CPUS_PATH`].
pub fn online() -> Result<CpuList> {
    let text = std::fs::read_to_string(ONLINE_CPUS_PATH)
        .map_err(|e| EngineError::Startup(format!("listing the online CPUs ({ONLINE_CPUS_PATH}): {e}")))?;
    CpuList::parse(&text).map_err(|e| EngineError::Startup(format!("{ONLINE_CPUS_PATH} says {text:?}: {e}")))
}

/// Where the shards run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ShardCpus {
    /// Shard `i` pinned to the `i`-th online CPU, wrapping: the default.
    #[default]
    Online,
    /// Shard `i` pinned to the `i`-th CPU of the list, wrapping.
    Pinned(CpuList),
    /// Not pinned: the kernel schedules the shards' threads.
    Unpinned,
}

impl ShardCpus {
    /// A CPU list ([`CpuList::parse`]), or [`UNPINNED`].
    pub fn parse(text: &str) -> std::result::Result<ShardCpus, String> {
        if text.trim() == UNPINNED {
            return Ok(ShardCpus::Unpinned);
        }
        CpuList::parse(text).map(ShardCpus::Pinned)
    }

    /// The CPUs the shards are pinned to on a machine whose online CPUs are
    /// `online` (`None`: unpinned), or why they cannot be: a CPU that is not online.
    pub fn resolve(&self, online: &CpuList) -> std::result::Result<Option<CpuList>, String> {
        match self {
            ShardCpus::Online => Ok(Some(online.clone())),
            ShardCpus::Unpinned => Ok(None),
            ShardCpus::Pinned(list) => {
                let missing = list.missing_from(online);
                match CpuList::from_cpus(missing) {
                    None => Ok(Some(list.clone())),
                    Some(missing) => {
                        let (noun, verb) = if missing.cpus().len() == 1 { ("CPU", "is") } else { ("CPUs", "are") };
                        Err(format!("{noun} {missing} {verb} not online (online CPUs: {online})"))
                    }
                }
            }
        }
    }
}

/// A CPU list, [`UNPINNED`], or, for the default, "online".
impl fmt::Display for ShardCpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardCpus::Online => f.write_str("online"),
            ShardCpus::Pinned(list) => write!(f, "{list}"),
            ShardCpus::Unpinned => f.write_str(UNPINNED),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> CpuList {
        CpuList::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn lists_parse_to_their_cpus_and_print_in_the_shortest_form() {
        for (text, cpus, printed) in [
            ("0", &[0][..], "0"),
            ("0-1", &[0, 1], "0-1"),
            ("0-1,3", &[0, 1, 3], "0-1,3"),
            ("3,0-1", &[0, 1, 3], "0-1,3"),
            ("0,1,2,5,7,8", &[0, 1, 2, 5, 7, 8], "0-2,5,7-8"),
            ("2-2", &[2], "2"),
            ("0-3,1-2,3", &[0, 1, 2, 3], "0-3"),
            ("1,1", &[1], "1"),
            (" 0 - 1 , 3\n", &[0, 1, 3], "0-1,3"),
            ("0-1\n", &[0, 1], "0-1"),
            ("8191", &[8191], "8191"),
            ("4,6", &[4, 6], "4,6"),
        ] {
            let parsed = list(text);
            assert_eq!(parsed.cpus(), cpus, "{text:?}");
            assert_eq!(parsed.to_string(), printed, "{text:?}");
            assert_eq!(list(printed), parsed, "{printed:?} reads back");
        }
    }

    #[test]
    fn bad_lists_are_refused_saying_why() {
        for (text, reason) in [
            ("", "the CPU list is empty"),
            ("  ", "the CPU list is empty"),
            ("0,,1", "\"0,,1\" has an empty item"),
            ("0,", "\"0,\" has an empty item"),
            ("a", "\"a\" is not a CPU number or range (such as 3 or 0-2)"),
            ("-1", "\"-1\" is not a CPU number or range (such as 3 or 0-2)"),
            ("0-", "\"0-\" is not a CPU number or range (such as 3 or 0-2)"),
            ("1-2-3", "\"1-2-3\" is not a CPU number or range (such as 3 or 0-2)"),
            ("+1", "\"+1\" is not a CPU number or range (such as 3 or 0-2)"),
            ("3-1", "\"3-1\" is a backwards range"),
            ("8192", "CPU 8192 is above 8191"),
            ("0-99999999999999999999", "CPU 99999999999999999999 is above 8191"),
            (
                "0-7:2",
                "\"0-7:2\": strided ranges are not supported (taskset and the kernel read them differently); \
                 list the CPUs instead",
            ),
            ("online", "\"online\" is not a CPU number or range (such as 3 or 0-2)"),
        ] {
            assert_eq!(CpuList::parse(text), Err(reason.to_string()), "{text:?}");
        }
    }

    #[test]
    fn shards_take_the_listed_cpus_in_order_and_wrap() {
        let cpus = list("1,3-4");
        let pinned: Vec<usize> = (0..5).map(|shard| cpus.cpu_for(ShardId(shard))).collect();
        assert_eq!(pinned, [1, 3, 4, 1, 3]);
    }

    #[test]
    fn shard_cpus_are_a_list_or_unpinned() {
        assert_eq!(ShardCpus::parse("unpinned"), Ok(ShardCpus::Unpinned));
        assert_eq!(ShardCpus::parse(" unpinned\n"), Ok(ShardCpus::Unpinned));
        assert_eq!(ShardCpus::parse("1"), Ok(ShardCpus::Pinned(list("1"))));
        assert!(ShardCpus::parse("Unpinned").is_err());
        assert!(ShardCpus::parse("").is_err());
        for shard_cpus in [ShardCpus::Unpinned, ShardCpus::Pinned(list("0-1,3"))] {
            assert_eq!(ShardCpus::parse(&shard_cpus.to_string()), Ok(shard_cpus.clone()), "{shard_cpus}");
        }
        assert_eq!(ShardCpus::default(), ShardCpus::Online);
    }

    #[test]
    fn shard_cpus_resolve_against_the_online_cpus() {
        let online = list("0-3");
        assert_eq!(ShardCpus::Online.resolve(&online), Ok(Some(online.clone())));
        assert_eq!(ShardCpus::Unpinned.resolve(&online), Ok(None));
        assert_eq!(ShardCpus::Pinned(list("1,3")).resolve(&online), Ok(Some(list("1,3"))));
        assert_eq!(
            ShardCpus::Pinned(list("3-4")).resolve(&online),
            Err("CPU 4 is not online (online CPUs: 0-3)".to_string())
        );
        assert_eq!(
            ShardCpus::Pinned(list("2,4-5,9")).resolve(&online),
            Err("CPUs 4-5,9 are not online (online CPUs: 0-3)".to_string())
        );
        let sparse = list("0,2");
        assert_eq!(
            ShardCpus::Pinned(list("1")).resolve(&sparse),
            Err("CPU 1 is not online (online CPUs: 0,2)".to_string())
        );
    }

    #[test]
    fn this_machine_lists_its_online_cpus() {
        let online = online().expect("the online CPUs are listed");
        assert!(!online.cpus().is_empty());
    }
}
