//! The background writers yield the disk to the journal.
//!
//! Every `202` waits for an `fdatasync` of the journal: a few kilobytes. The writers beside it
//! write in bursts to the same disk: the projection's durable commit (megabytes a second), the
//! idempotency index's flushes and compactions, the zero-fill of the next segment. A journal
//! sync queued behind such a burst waits for all of it, and that wait is the tail of the
//! acknowledgement's latency (`docs/benchmarks.md`).
//!
//! So those threads do their I/O in Linux's idle class: the block layer's schedulers that
//! honour priorities (mq-deadline, bfq) dispatch an idle request only when no request of a
//! higher class waits, and age it up after a while (10 s in mq-deadline), so a busy journal
//! delays the background work but never starves it. The journal's writer and the readers keep
//! the default class. With the `none` scheduler (common on NVMe) the class changes nothing.
//! No privilege is needed to lower one's own class.

/// Moves the calling thread's disk I/O to the idle class; threads it starts inherit the class.
/// Best effort: a kernel that refuses leaves the thread where it was.
pub(super) fn yield_the_disk() {
    #[cfg(target_os = "linux")]
    if let Err(error) = linux::set_idle_class() {
        tracing::debug!(%error, "cannot lower this thread's I/O priority");
    }
}

/// Runs `open` on a thread of its own in the idle class, so that the threads it starts (fjall's
/// flush and compaction workers) inherit that class while the caller keeps its own.
pub(super) fn open_in_background<T: Send>(open: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                yield_the_disk();
                open()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod linux {
    // From include/uapi/linux/ioprio.h.
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    pub(super) const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    const IOPRIO_CLASS_SHIFT: libc::c_int = 13;

    /// `ioprio_set(IOPRIO_WHO_PROCESS, 0, IDLE)`: 0 is the calling thread.
    pub(super) fn set_idle_class() -> std::io::Result<()> {
        // SAFETY: ioprio_set takes three integers and touches no memory of ours. No kept crate
        // wraps it (rustix and nix do not; the `ioprio` crate pulls a 2021 nix).
        let result = unsafe {
            libc::syscall(
                libc::SYS_ioprio_set,
                IOPRIO_WHO_PROCESS,
                0,
                IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
            )
        };
        if result == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// The calling thread's class, from `ioprio_get`.
    #[cfg(test)]
    pub(super) fn class() -> libc::c_long {
        // SAFETY: as above.
        let value = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0) };
        value >> IOPRIO_CLASS_SHIFT
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::linux::{IOPRIO_CLASS_IDLE, class};
    use super::*;

    #[test]
    fn background_threads_and_their_children_run_in_the_idle_class_and_the_caller_does_not() {
        let before = class();
        let (own, child) = open_in_background(|| {
            let child = std::thread::spawn(class).join().unwrap();
            (class(), child)
        });
        assert_eq!((own, child), (IOPRIO_CLASS_IDLE, IOPRIO_CLASS_IDLE));
        assert_eq!(class(), before);
        assert_ne!(before, IOPRIO_CLASS_IDLE);
    }
}
