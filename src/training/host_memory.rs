//! Where CPU training keeps the buffers it frees between steps: in the process's
//! heap, where the allocator reuses them for any size.
//!
//! A training step frees and asks again for the same few hundred buffers, many of
//! them tens of megabytes. With glibc's defaults such buffers go back to the
//! kernel when freed (chunks above the mmap threshold, a trimmed heap top, a
//! worker thread's heap deleted once empty), so every step faults their pages in
//! again, and unmapping them stalls the other core (TLB shootdowns). dfdx's own
//! cache avoids that, but it reuses a buffer only for a request of exactly its
//! size, so it holds a set of buffers for every size a step asks for: 2.5 GB of
//! Darknet-53's 3.9 GB peak. One heap that keeps freed memory serves a request
//! of any size from it: Darknet-53 then peaks at 2.1 GB, and trains no slower.
//!
//! The binary calls [`keep_freed_memory`] first thing, before any thread starts;
//! a CPU session turns dfdx's cache on only where that did not happen (the
//! library used on its own, or a platform other than glibc's).

use std::sync::atomic::{AtomicBool, Ordering};

static KEEPS_FREED_MEMORY: AtomicBool = AtomicBool::new(false);

/// Makes the allocator keep freed memory for reuse: one heap for all threads (a
/// thread's own heap is unmapped whenever it empties), no chunks mapped on their
/// own, no trimming of the heap's top. Call before any thread is started.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes glibc's tuning parameters; it is called
        // before any other thread exists, as its documentation asks.
        let set = |param, value| unsafe { libc::mallopt(param, value) } == 1;
        let kept = set(libc::M_ARENA_MAX, 1)
            && set(libc::M_MMAP_MAX, 0)
            && set(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        KEEPS_FREED_MEMORY.store(kept, Ordering::SeqCst);
    }
}

/// Whether [`keep_freed_memory`] took effect in this process.
pub fn keeps_freed_memory() -> bool {
    KEEPS_FREED_MEMORY.load(Ordering::SeqCst)
}

/// Gives the heap's free memory back to the system, for a process that goes on
/// idling after its work (`fkp watch` between rounds).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if keeps_freed_memory() {
        // SAFETY: malloc_trim only returns free pages; nothing in use moves.
        unsafe { libc::malloc_trim(0) };
    }
}
