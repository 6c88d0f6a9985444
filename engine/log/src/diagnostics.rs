//! Start-up checks for io_uring and locked memory, and the data directory's file
//! system space ([`file_system_space`]): what the engine asks of libc.
//!
//! Every shard runs a glommio executor, and glommio needs two things from the host
//! that are often missing:
//!
//! - **Locked memory.** glommio's reactor refuses to start when the RLIMIT_MEMLOCK
//!   soft limit is below 512 KiB, and each executor registers its `io_memory`
//!   buffer (10 MiB by default) with io_uring, which the kernel charges to that
//!   limit unless the process has CAP_IPC_LOCK. Containers and systemd services
//!   commonly run with 64 KiB or 8 MiB, which is not enough for several shards.
//! - **io_uring itself.** It can be absent (old kernels, gVisor), hidden by a
//!   seccomp profile (recent Docker defaults), or switched off by the
//!   `kernel.io_uring_disabled` sysctl.
//!
//! Without a check, these surface later, from inside executor start-up, as a terse
//! OS or reactor error that names neither the cause nor the fix. [`probe_io_uring`]
//! runs once, before any executor is built, and turns each case into a
//! [`StartupError`] whose message names the cause and the command that fixes it.
//! It raises the soft memlock limit itself when the hard limit (or
//! CAP_SYS_RESOURCE) allows.

use std::io;
use std::path::Path;

use crate::error::{EngineError, Result};

/// glommio 0.9's `MIN_MEMLOCK_LIMIT`: its reactor will not start below this.
pub const GLOMMIO_MIN_MEMLOCK_BYTES: u64 = 512 * 1024;

const SYSCTL_PATH: &str = "/proc/sys/kernel/io_uring_disabled";

const MEMLOCK_FIXES: &str = "`ulimit -l unlimited` (or a value in KiB) in the shell that \
    starts the broker, `LimitMEMLOCK=infinity` in its systemd unit, \
    `docker run --ulimit memlock=-1:-1`, or `* - memlock unlimited` in /etc/security/limits.conf";

const SECCOMP_FIX: &str = "under Docker pass `--security-opt seccomp=unconfined` or a seccomp \
    profile that allows io_uring_setup, io_uring_enter and io_uring_register";

/// What the probe found on a healthy machine.
#[derive(Debug, Clone)]
pub struct IoUringReport {
    /// RLIMIT_MEMLOCK soft limit after the probe (it may have raised it); `None` = unlimited.
    pub memlock_soft_bytes: Option<u64>,
    /// RLIMIT_MEMLOCK hard limit after the probe; `None` = unlimited.
    pub memlock_hard_bytes: Option<u64>,
    /// Value of `/proc/sys/kernel/io_uring_disabled`, `None` if the kernel has no such sysctl.
    pub io_uring_disabled_sysctl: Option<u32>,
    /// `uname -r`.
    pub kernel_release: String,
}

/// Why the host cannot run the engine's io_uring executors.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The RLIMIT_MEMLOCK soft limit is below what the executors need, and could not be raised.
    #[error(
        "locked-memory limit too low: RLIMIT_MEMLOCK is {} (hard {}) but the io_uring executors \
         need {}{}; fix: {MEMLOCK_FIXES}.",
        kib(Some(*soft_bytes)), kib(*hard_bytes), kib(Some(*required_bytes)),
        hard_note(*hard_bytes, *required_bytes)
    )]
    MemlockTooLow {
        soft_bytes: u64,
        /// `None` = unlimited.
        hard_bytes: Option<u64>,
        /// max(glommio's 512 KiB floor, the caller's requirement).
        required_bytes: u64,
    },

    /// `io_uring_setup` returned ENOSYS.
    #[error(
        "io_uring_setup failed with ENOSYS: the kernel has no io_uring or a seccomp filter hides it \
         (gVisor has none); fix: run on Linux >= 5.8 (glommio's minimum) and, {SECCOMP_FIX}."
    )]
    IoUringUnsupported,

    /// `io_uring_setup` returned EPERM and `kernel.io_uring_disabled` is non-zero.
    #[error("{}", disabled_message(*sysctl))]
    IoUringDisabled { sysctl: u32 },

    /// `io_uring_setup` returned EPERM although the sysctl allows it: seccomp or an LSM.
    #[error(
        "io_uring_setup was refused with EPERM by a seccomp filter or security module \
         (kernel.io_uring_disabled is {}); fix: {SECCOMP_FIX}, otherwise look for the denial in \
         `dmesg` or `ausearch -m avc` and allow io_uring for the broker.",
        sysctl.map_or_else(|| "absent".to_string(), |v| v.to_string())
    )]
    IoUringDenied { sysctl: Option<u32> },

    /// `io_uring_setup` returned ENOMEM.
    #[error(
        "io_uring_setup failed with ENOMEM: the kernel could not allocate or lock memory for the \
         ring; fix: raise the locked-memory limit with {MEMLOCK_FIXES}, or the container's memory limit."
    )]
    IoUringNoMemory,

    /// `io_uring_setup` failed with any other errno.
    #[error(
        "io_uring_setup failed: {message}; fix: check `dmesg`, and that the kernel is Linux >= 5.8 \
         with `sysctl kernel.io_uring_disabled` at 0."
    )]
    IoUringSetup { errno: i32, message: String },

    /// getrlimit/setrlimit itself failed (in practice only when seccomp blocks prlimit64).
    #[error(
        "reading RLIMIT_MEMLOCK failed: {message}; fix: allow getrlimit/prlimit64 in the seccomp \
         profile (under Docker, `--security-opt seccomp=unconfined` confirms the cause)."
    )]
    Rlimit { errno: i32, message: String },
}

fn kib(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "unlimited".to_string(), |b| format!("{} KiB", b.div_ceil(1024)))
}

fn hard_note(hard: Option<u64>, required: u64) -> &'static str {
    match hard {
        Some(h) if h < required => "; the hard limit is too low as well, so raising it needs root (CAP_SYS_RESOURCE)",
        _ => "",
    }
}

fn disabled_message(sysctl: u32) -> String {
    if sysctl == 1 {
        "io_uring_setup was refused: kernel.io_uring_disabled=1 allows io_uring only to \
         CAP_SYS_ADMIN and the group in kernel.io_uring_group; fix: add the broker's user to that \
         group (`sysctl kernel.io_uring_group` shows its gid) or run \
         `sysctl -w kernel.io_uring_disabled=0` as root."
            .to_string()
    } else {
        format!(
            "io_uring_setup was refused: io_uring is disabled system-wide \
             (kernel.io_uring_disabled={sysctl}); fix: run `sysctl -w kernel.io_uring_disabled=0` \
             as root and persist it in /etc/sysctl.d/."
        )
    }
}

/// Checks a RLIMIT_MEMLOCK soft limit (`None` = unlimited) against `required` bytes,
/// never accepting less than glommio's 512 KiB floor.
///
/// The hard limit is not known here, so an error reports it equal to the soft limit
/// (the usual container setup); [`probe_io_uring`] reports the real one.
pub fn check_memlock(soft: Option<u64>, required: u64) -> Result<(), StartupError> {
    memlock_verdict(soft, soft, required)
}

fn memlock_verdict(soft: Option<u64>, hard: Option<u64>, required: u64) -> Result<(), StartupError> {
    let needed = required.max(GLOMMIO_MIN_MEMLOCK_BYTES);
    match soft {
        Some(soft_bytes) if soft_bytes < needed => {
            Err(StartupError::MemlockTooLow { soft_bytes, hard_bytes: hard, required_bytes: needed })
        }
        _ => Ok(()),
    }
}

/// Maps a failed `io_uring_setup` errno, together with the `kernel.io_uring_disabled`
/// sysctl (`None` if absent), to the error that explains it.
pub fn classify_setup_errno(errno: i32, sysctl: Option<u32>) -> StartupError {
    match errno {
        libc::ENOSYS => StartupError::IoUringUnsupported,
        libc::EPERM => match sysctl {
            Some(value) if value != 0 => StartupError::IoUringDisabled { sysctl: value },
            _ => StartupError::IoUringDenied { sysctl },
        },
        libc::ENOMEM => StartupError::IoUringNoMemory,
        _ => StartupError::IoUringSetup { errno, message: io::Error::from_raw_os_error(errno).to_string() },
    }
}

/// Probes, before any executor exists, that io_uring can be set up and that
/// `memlock_required_bytes` of memory can be locked (the caller passes shards times
/// the per-shard io memory). A too-low soft memlock limit is raised when the hard
/// limit (or CAP_SYS_RESOURCE) allows. With CAP_IPC_LOCK in the initial user namespace
/// the kernel does not charge io_uring memory to RLIMIT_MEMLOCK, so then only
/// glommio's 512 KiB floor applies.
pub fn probe_io_uring(memlock_required_bytes: u64) -> Result<IoUringReport, StartupError> {
    let (mut soft, mut hard) = read_memlock()?;
    if memlock_verdict(soft, hard, memlock_required_bytes).is_err() {
        let needed = memlock_required_bytes.max(GLOMMIO_MIN_MEMLOCK_BYTES);
        if raise_memlock(needed, hard).is_ok() {
            (soft, hard) = read_memlock()?;
        }
        let required = if kernel_skips_memlock_accounting() { 0 } else { memlock_required_bytes };
        memlock_verdict(soft, hard, required)?;
    }

    let sysctl = read_io_uring_sysctl();
    if let Err(errno) = try_io_uring_setup() {
        return Err(classify_setup_errno(errno, sysctl));
    }
    Ok(IoUringReport {
        memlock_soft_bytes: soft,
        memlock_hard_bytes: hard,
        io_uring_disabled_sysctl: sysctl,
        kernel_release: kernel_release(),
    })
}

/// io_uring skips memlock accounting for CAP_IPC_LOCK (bit 14) held in the initial user
/// namespace; a full-range identity uid_map means we are in it (not rootless containers).
fn kernel_skips_memlock_accounting() -> bool {
    let read = |path| std::fs::read_to_string(path).unwrap_or_default();
    let uid_map = read("/proc/self/uid_map");
    let initial_ns = uid_map.split_whitespace().eq(["0", "0", "4294967295"]);
    let status = read("/proc/self/status");
    let cap_eff = status.lines().find_map(|line| line.strip_prefix("CapEff:"));
    let ipc_lock = cap_eff.and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok()).is_some_and(|c| c & (1 << 14) != 0);
    initial_ns && ipc_lock
}

fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on 64-bit Linux, not everywhere
fn from_rlim(value: libc::rlim_t) -> Option<u64> {
    (value != libc::RLIM_INFINITY).then_some(value as u64)
}

fn to_rlim(value: Option<u64>) -> libc::rlim_t {
    value.and_then(|v| libc::rlim_t::try_from(v).ok()).unwrap_or(libc::RLIM_INFINITY)
}

/// (soft, hard) RLIMIT_MEMLOCK in bytes; `None` = unlimited.
fn read_memlock() -> Result<(Option<u64>, Option<u64>), StartupError> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes into the rlimit we pass by valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        let errno = last_errno();
        return Err(StartupError::Rlimit { errno, message: io::Error::from_raw_os_error(errno).to_string() });
    }
    Ok((from_rlim(limit.rlim_cur), from_rlim(limit.rlim_max)))
}

/// Sets the soft limit to `needed`, lifting the hard limit to it too if that is lower
/// (which only succeeds with CAP_SYS_RESOURCE). Returns the errno on failure.
fn raise_memlock(needed: u64, hard: Option<u64>) -> Result<(), i32> {
    let new_hard = match hard {
        Some(h) if h < needed => Some(needed),
        other => other,
    };
    let limit = libc::rlimit { rlim_cur: to_rlim(Some(needed)), rlim_max: to_rlim(new_hard) };
    // SAFETY: setrlimit only reads the rlimit we pass by valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        return Err(last_errno());
    }
    Ok(())
}

fn read_io_uring_sysctl() -> Option<u32> {
    std::fs::read_to_string(SYSCTL_PATH).ok()?.trim().parse().ok()
}

/// The kernel's 120-byte `struct io_uring_params`. Zeroed means default flags; the
/// fields the kernel fills in are not read, so they need no names.
#[repr(C)]
#[derive(Default)]
struct IoUringParams([u64; 15]);

const _: () = assert!(std::mem::size_of::<IoUringParams>() == 120);

/// Creates and closes a 4-entry ring. Returns the errno on failure.
fn try_io_uring_setup() -> Result<(), i32> {
    let mut params = IoUringParams::default();
    // SAFETY: io_uring_setup reads and writes exactly one io_uring_params, which
    // `params` is (zeroed, correct size and alignment); it lives across the call.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4 as libc::c_uint, &mut params as *mut IoUringParams) };
    if fd < 0 {
        return Err(last_errno());
    }
    if let Ok(fd) = libc::c_int::try_from(fd) {
        // SAFETY: `fd` is the ring descriptor we just received and own; nothing else uses it.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

fn kernel_release() -> String {
    // SAFETY: utsname is plain C data, so all-zero is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname only writes into the utsname we pass by valid pointer.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return "unknown".to_string();
    }
    let bytes: Vec<u8> = uts.release.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The size of the file system a data directory is on (DescribeLogDirs' total and
/// usable bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSystemSpace {
    pub total_bytes: u64,
    /// What an unprivileged writer may still use (`f_bavail`, as `df` shows).
    pub usable_bytes: u64,
}

/// The space of the file system `path` is on (`statvfs(3)`).
pub fn file_system_space(path: &Path) -> Result<FileSystemSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| EngineError::DataDirectory(format!("{} has a NUL byte in its path", path.display())))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and
    // `stat` is writable memory of the struct's size, which statvfs fills on success.
    let status = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if status != 0 {
        return Err(EngineError::io("statvfs", path, io::Error::last_os_error()));
    }
    // SAFETY: statvfs returned 0, so it initialized the whole struct.
    let stat = unsafe { stat.assume_init() };
    // 64-bit Linux, the only target (glommio): these fields are u64.
    let block = stat.f_frsize;
    Ok(FileSystemSpace {
        total_bytes: stat.f_blocks.saturating_mul(block),
        usable_bytes: stat.f_bavail.saturating_mul(block),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_system_space_of_a_directory_is_its_size_and_what_is_free() {
        let dir = tempfile::tempdir().expect("tempdir");
        let space = file_system_space(dir.path()).expect("statvfs");
        assert!(space.total_bytes > 0 && space.usable_bytes <= space.total_bytes, "{space:?}");
        let error = file_system_space(&dir.path().join("missing")).expect_err("no such directory");
        assert!(error.to_string().contains("statvfs"), "{error}");
    }

    const MIB: u64 = 1 << 20;

    fn assert_mentions(err: &StartupError, needles: &[&str]) {
        let msg = err.to_string();
        assert!(msg.contains("; fix: "), "no fix in {msg}");
        for needle in needles {
            assert!(msg.contains(needle), "missing {needle:?} in {msg}");
        }
    }

    #[test]
    fn memlock_below_required_is_rejected_with_fixes() {
        let err = check_memlock(Some(8 * MIB), 10 * MIB).unwrap_err();
        assert!(matches!(
            err,
            StartupError::MemlockTooLow { soft_bytes, hard_bytes: Some(hard), required_bytes }
                if (soft_bytes, hard, required_bytes) == (8 * MIB, 8 * MIB, 10 * MIB)
        ));
        assert!(err.to_string().starts_with("locked-memory limit too low"), "{err}");
        assert_mentions(&err, &["8192 KiB", "10240 KiB", "ulimit -l", "LimitMEMLOCK=infinity", "needs root"]);
        assert_mentions(&err, &["--ulimit memlock=-1:-1", "* - memlock unlimited"]);
        let unlimited_hard = memlock_verdict(Some(MIB), None, 10 * MIB).unwrap_err().to_string();
        assert!(unlimited_hard.contains("hard unlimited") && !unlimited_hard.contains("root"), "{unlimited_hard}");
    }

    #[test]
    fn memlock_at_least_the_floor_and_required_is_accepted() {
        let err = check_memlock(Some(64 * 1024), 0).unwrap_err();
        assert!(matches!(err, StartupError::MemlockTooLow { required_bytes, .. } if required_bytes == 512 * 1024));
        assert!(check_memlock(Some(64 * MIB), 10 * MIB).is_ok());
        assert!(check_memlock(Some(10 * MIB), 10 * MIB).is_ok());
        assert!(check_memlock(None, u64::MAX).is_ok());
    }

    #[test]
    fn enosys_and_enomem_name_their_causes() {
        let err = classify_setup_errno(libc::ENOSYS, Some(0));
        assert!(matches!(err, StartupError::IoUringUnsupported));
        assert_mentions(&err, &["5.8", "seccomp=unconfined", "io_uring_register", "gVisor"]);
        let err = classify_setup_errno(libc::ENOMEM, None);
        assert!(matches!(err, StartupError::IoUringNoMemory));
        assert_mentions(&err, &["ulimit -l", "LimitMEMLOCK=infinity"]);
    }

    #[test]
    fn eperm_depends_on_the_sysctl() {
        let err = classify_setup_errno(libc::EPERM, Some(2));
        assert!(matches!(err, StartupError::IoUringDisabled { sysctl: 2 }));
        assert_mentions(&err, &["sysctl -w kernel.io_uring_disabled=0", "/etc/sysctl.d"]);
        let err = classify_setup_errno(libc::EPERM, Some(1));
        assert!(matches!(err, StartupError::IoUringDisabled { sysctl: 1 }));
        assert_mentions(&err, &["kernel.io_uring_group", "kernel.io_uring_disabled=0"]);
        for sysctl in [None, Some(0)] {
            let err = classify_setup_errno(libc::EPERM, sysctl);
            assert!(matches!(err, StartupError::IoUringDenied { sysctl: s } if s == sysctl));
            assert_mentions(&err, &["seccomp=unconfined", "io_uring_enter", "ausearch"]);
        }
    }

    #[test]
    fn unknown_errno_keeps_the_os_text() {
        let err = classify_setup_errno(libc::EINVAL, Some(0));
        assert!(matches!(err, StartupError::IoUringSetup { errno, .. } if errno == libc::EINVAL));
        assert_mentions(&err, &["Invalid argument"]);
        let rlimit = StartupError::Rlimit { errno: libc::EPERM, message: "denied".into() };
        assert_mentions(&rlimit, &["prlimit64"]);
    }

    #[test]
    fn probe_succeeds_on_this_machine() {
        let report = probe_io_uring(10 * MIB).unwrap_or_else(|e| panic!("probe failed: {e}"));
        assert!(report.memlock_soft_bytes.unwrap_or(u64::MAX) >= GLOMMIO_MIN_MEMLOCK_BYTES, "{report:?}");
        assert!(report.kernel_release.starts_with(|c: char| c.is_ascii_digit()), "{report:?}");
        eprintln!("{report:?}");
    }
}
