//! The process's resource limits: the soft limits ringside raises at start
//! (open files, locked memory), the io_uring ring size that fits them, and
//! the words an operator needs when one of them is what stopped ringside.

use std::{fmt, io};

/// A limit this module reads or raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// RLIMIT_NOFILE: open file descriptors (every connection is one).
    Nofile,
    /// RLIMIT_MEMLOCK: locked memory, which many kernels charge io_uring
    /// rings to (`rings_use_memlock`).
    Memlock,
}

impl Resource {
    fn id(self) -> libc::__rlimit_resource_t {
        match self {
            Resource::Nofile => libc::RLIMIT_NOFILE,
            Resource::Memlock => libc::RLIMIT_MEMLOCK,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Resource::Nofile => "RLIMIT_NOFILE",
            Resource::Memlock => "RLIMIT_MEMLOCK",
        }
    }
}

/// One resource's soft and hard limits; `u64::MAX` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub soft: u64,
    pub hard: u64,
}

/// A limit's value as an operator reads it: `unlimited`, or the number
/// (bytes for memory).
struct Shown(Resource, u64);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (_, u64::MAX) => f.write_str("unlimited"),
            (Resource::Memlock, n) if n >= 1 << 20 && n % (1 << 20) == 0 => {
                write!(f, "{} MiB", n >> 20)
            }
            (Resource::Memlock, n) if n >= 1024 && n % 1024 == 0 => write!(f, "{} KiB", n >> 10),
            (Resource::Memlock, n) => write!(f, "{n} bytes"),
            (Resource::Nofile, n) => write!(f, "{n}"),
        }
    }
}

/// The current limits of `r`.
pub fn get(r: Resource) -> io::Result<Limit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into `lim`, a live local that
    // nothing else refers to.
    if unsafe { libc::getrlimit(r.id(), &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let wide = |v: libc::rlim_t| match v {
        libc::RLIM_INFINITY => u64::MAX,
        v => v,
    };
    Ok(Limit {
        soft: wide(lim.rlim_cur),
        hard: wide(lim.rlim_max),
    })
}

fn set(r: Resource, soft: u64, hard: u64) -> io::Result<()> {
    let narrow = |v: u64| match v {
        u64::MAX => libc::RLIM_INFINITY,
        v => v,
    };
    let lim = libc::rlimit {
        rlim_cur: narrow(soft),
        rlim_max: narrow(hard),
    };
    // SAFETY: setrlimit only reads the `rlimit` it is given, a live local.
    if unsafe { libc::setrlimit(r.id(), &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the soft limit of `r` as far as the hard limit allows, without
/// privileges. Returns a line saying what changed, if anything did.
pub fn raise(r: Resource) -> io::Result<Option<String>> {
    let now = get(r)?;
    if now.soft >= now.hard {
        return Ok(None);
    }
    let mut target = now.hard;
    // An unlimited hard RLIMIT_NOFILE still stops at fs.nr_open.
    if r == Resource::Nofile && target == u64::MAX {
        target = nr_open().unwrap_or(now.soft).max(now.soft);
    }
    if target == now.soft {
        return Ok(None);
    }
    set(r, target, now.hard)?;
    Ok(Some(format!(
        "raised the soft {} from {} to {}",
        r.name(),
        Shown(r, now.soft),
        Shown(r, target)
    )))
}

/// Raises the soft RLIMIT_NOFILE and RLIMIT_MEMLOCK to their hard limits
/// (as nginx's `worker_rlimit_nofile` would, without config); one line per
/// change or failure, for the error log.
pub fn raise_at_start() -> Vec<String> {
    let mut lines = Vec::new();
    for r in [Resource::Nofile, Resource::Memlock] {
        match raise(r) {
            Ok(Some(line)) => lines.push(line),
            Ok(None) => {}
            Err(e) => lines.push(format!("cannot raise the soft {}: {e}", r.name())),
        }
    }
    lines
}

fn nr_open() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/sys/fs/nr_open").ok()?;
    text.trim().parse().ok()
}

/// Whether this kernel charges io_uring rings to RLIMIT_MEMLOCK for this
/// process. Kernels before 5.12 did, 5.12 to 6.12 charged the memory cgroup
/// instead, and later ones charge both; a process with CAP_IPC_LOCK is never
/// charged. Rather than guess from the version, this asks the kernel: with
/// the soft limit at 0 for a moment, a one-entry ring fails with ENOMEM
/// exactly when rings are charged. Run before any worker starts, since the
/// limit is the process's.
pub fn rings_use_memlock() -> bool {
    let Ok(now) = get(Resource::Memlock) else {
        return false;
    };
    if set(Resource::Memlock, 0, now.hard).is_err() {
        return false;
    }
    let probe = io_uring::IoUring::new(1);
    let charged = matches!(&probe, Err(e) if e.raw_os_error() == Some(libc::ENOMEM));
    drop(probe);
    if let Err(e) = set(Resource::Memlock, now.soft, now.hard) {
        crate::error!("cannot restore the soft RLIMIT_MEMLOCK: {e}");
    }
    charged
}

/// Smallest ring ringside asks for before it gives up on io_uring.
pub const MIN_RING_ENTRIES: u32 = 64;

/// Provided buffers each worker registers with its ring (`conn::idle`
/// receives into them; `worker::provide_buffers`).
pub const PROVIDED_BUFFERS: u16 = 512;

/// Locked memory budgeted for a worker's ring of provided buffers: its
/// entries (16 bytes each), counted twice, since the kernel's charge for a
/// ring and its buffer ring together was found above this model's sum.
const PROVIDED_RING_BYTES: u64 = 2 * 16 * PROVIDED_BUFFERS as u64;

/// Bytes of locked memory one ring of `entries` costs where rings are
/// charged to RLIMIT_MEMLOCK: the 64-byte SQEs, and the rings (twice as many
/// 16-byte CQEs, the 4-byte SQ index array, a page for the headers), each
/// allocated as a power of two (measured on Linux 6.18: 4096 entries take
/// 512 KiB, 256 entries 32 KiB), and never less than 24 KiB (a 64-entry
/// ring took that much).
pub fn ring_bytes(entries: u32) -> u64 {
    let n = u64::from(entries);
    let model = (64 * n).next_power_of_two() + (32 * n + 4 * n + 4096).next_power_of_two();
    model.max(24 << 10)
}

/// The ring size and the provided buffers for each of `workers` workers:
/// `wanted` entries and `PROVIDED_BUFFERS`, or, where rings are charged to
/// RLIMIT_MEMLOCK (`charged`), the largest ring that fits `memlock` bytes
/// with its buffer ring; if not even the smallest does, the rings alone
/// (`ring_entries`) and no provided buffers (every wait then polls for
/// readiness), the same for every worker.
pub fn ring_plan(wanted: u32, workers: usize, memlock: u64, charged: bool) -> (u32, u16) {
    if !charged || memlock == u64::MAX {
        return (wanted, PROVIDED_BUFFERS);
    }
    let with = largest_fit(wanted, workers, memlock, PROVIDED_RING_BYTES);
    if fits(with, workers, memlock, PROVIDED_RING_BYTES) {
        (with, PROVIDED_BUFFERS)
    } else {
        (ring_entries(wanted, workers, memlock, charged), 0)
    }
}

/// The largest power of two up to `wanted`, not below `MIN_RING_ENTRIES`,
/// whose rings plus `extra` bytes each fit `workers` times in `memlock`.
fn largest_fit(wanted: u32, workers: usize, memlock: u64, extra: u64) -> u32 {
    let mut entries = wanted;
    while entries > MIN_RING_ENTRIES && !fits(entries, workers, memlock, extra) {
        entries /= 2;
    }
    entries
}

/// Whether `workers` rings of `entries`, plus `extra` bytes each, fit in
/// `memlock`.
fn fits(entries: u32, workers: usize, memlock: u64, extra: u64) -> bool {
    (ring_bytes(entries) + extra) * workers as u64 <= memlock
}

/// The ring size for each of `workers` workers: `wanted` entries, or where
/// rings are charged to RLIMIT_MEMLOCK (`charged`), the largest power of two
/// whose rings all fit in `memlock` bytes (never below `MIN_RING_ENTRIES`,
/// where setting up io_uring will fail and say why).
pub fn ring_entries(wanted: u32, workers: usize, memlock: u64, charged: bool) -> u32 {
    if !charged || memlock == u64::MAX {
        return wanted;
    }
    largest_fit(wanted, workers, memlock, 0)
}

/// What to tell an operator after io_uring could not be set up with `e`:
/// the likely cause and the setting that fixes it. `charged`: rings count
/// against RLIMIT_MEMLOCK here (`rings_use_memlock`), whose limits were
/// `memlock`.
pub fn explain_uring_error(e: &io::Error, charged: bool, memlock: Option<Limit>) -> String {
    match e.raw_os_error() {
        Some(libc::ENOMEM) if charged => {
            let limit = memlock.map_or("unknown".to_string(), |l| {
                format!(
                    "soft {}, hard {}",
                    Shown(Resource::Memlock, l.soft),
                    Shown(Resource::Memlock, l.hard)
                )
            });
            format!(
                "this kernel charges io_uring rings to the locked-memory limit, RLIMIT_MEMLOCK \
                 ({limit}), and it cannot hold even the smallest ring: raise it \
                 (LimitMEMLOCK=infinity under systemd, `ulimit -l unlimited`, or memlock in \
                 limits.conf)"
            )
        }
        Some(libc::ENOMEM) => "the kernel could not allocate the rings (they are charged to \
             the memory cgroup here, not to RLIMIT_MEMLOCK): raise the service's memory limit \
             (MemoryMax= under systemd)"
            .to_string(),
        Some(libc::EPERM) => "io_uring is forbidden to this process: the sysctl \
             kernel.io_uring_disabled, or a seccomp profile (Docker's default blocks io_uring)"
            .to_string(),
        Some(libc::ENOSYS) => "this kernel has no io_uring (Linux 5.1 or later with \
             CONFIG_IO_URING is needed)"
            .to_string(),
        _ => "io_uring is unusable here".to_string(),
    }
}

/// What to tell an operator after `accept` failed with `e` for lack of
/// descriptors; `None` for other errors.
pub fn explain_accept_error(e: &io::Error) -> Option<String> {
    match e.raw_os_error()? {
        libc::EMFILE => {
            let limit = get(Resource::Nofile).map_or("unknown".to_string(), |l| {
                Shown(Resource::Nofile, l.soft).to_string()
            });
            Some(format!(
                "the process is at its open-file limit, RLIMIT_NOFILE ({limit}): raise it \
                 (LimitNOFILE= under systemd, `ulimit -n`)"
            ))
        }
        libc::ENFILE => {
            Some("the system is at its open-file limit: raise the sysctl fs.file-max".to_string())
        }
        libc::ENOBUFS | libc::ENOMEM => Some("the kernel is short of socket memory".to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn rings_shrink_to_fit_a_memlock_limit_that_charges_them() {
        // As measured on Linux 6.18.
        assert_eq!(ring_bytes(4096), 512 << 10);
        assert_eq!(ring_bytes(256), 32 << 10);
        assert_eq!(ring_bytes(64), 24 << 10);
        assert_eq!(ring_entries(4096, 2, 64 << 10, true), 256);
        assert_eq!(ring_entries(4096, 4, 64 << 10, false), 4096);
        assert_eq!(ring_entries(4096, 4, u64::MAX, true), 4096);
        assert_eq!(ring_entries(4096, 4, 8 << 20, true), 4096);
        let n = ring_entries(4096, 4, 1 << 20, true);
        assert!(
            ring_bytes(n) * 4 <= 1 << 20 && ring_bytes(n * 2) * 4 > 1 << 20,
            "{n}"
        );
        assert_eq!(ring_entries(4096, 64, 64 << 10, true), MIN_RING_ENTRIES);
    }

    #[test]
    fn provided_buffers_are_budgeted_with_the_rings_or_left_out_for_all() {
        let all = PROVIDED_BUFFERS;
        assert_eq!(ring_plan(4096, 4, 64 << 10, false), (4096, all));
        assert_eq!(ring_plan(4096, 4, u64::MAX, true), (4096, all));
        // 2 x (24 KiB + 16 KiB) for 128-entry rings: the most 80 KiB holds.
        assert_eq!(ring_plan(4096, 2, 80 << 10, true), (128, all));
        // Not even the smallest ring with its buffers: the rings alone, as
        // large as they fit, and no buffers for any worker.
        assert_eq!(ring_plan(4096, 2, 64 << 10, true), (256, 0));
    }

    #[test]
    fn a_ring_refused_for_memory_names_the_limit_to_raise() {
        let enomem = io::Error::from_raw_os_error(libc::ENOMEM);
        let small = Some(Limit {
            soft: 64 << 10,
            hard: 64 << 10,
        });
        let charged = explain_uring_error(&enomem, true, small);
        assert!(
            charged.contains("RLIMIT_MEMLOCK (soft 64 KiB, hard 64 KiB)")
                && charged.contains("LimitMEMLOCK=infinity"),
            "{charged}"
        );
        let cgroup = explain_uring_error(&enomem, false, small);
        assert!(
            cgroup.contains("memory cgroup here, not to RLIMIT_MEMLOCK"),
            "{cgroup}"
        );
        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        assert!(explain_uring_error(&eperm, false, None).contains("io_uring_disabled"));
    }

    #[test]
    fn limits_show_as_an_operator_writes_them() {
        assert_eq!(Shown(Resource::Memlock, 8 << 20).to_string(), "8 MiB");
        assert_eq!(Shown(Resource::Memlock, 64 << 10).to_string(), "64 KiB");
        assert_eq!(Shown(Resource::Memlock, 100).to_string(), "100 bytes");
        assert_eq!(Shown(Resource::Nofile, u64::MAX).to_string(), "unlimited");
        assert_eq!(Shown(Resource::Nofile, 1024).to_string(), "1024");
    }
}
