//! Allocator settings for the processes that carry tunnel traffic (the laptop's daemon and
//! the manager).
//!
//! A bulk flow allocates and frees the same few large buffers (yamux frames of up to
//! 256 KiB, packets of up to 64 KiB) thousands of times a second. With glibc's defaults a
//! freed buffer at the top of the heap is handed back to the kernel once more than 128 KiB
//! is free there, and the next allocation faults the same pages in again: profiles of a
//! 1 GiB transfer showed the manager spending about a fifth of its time in page faults.
//! Keeping a few MiB of freed memory in the process removes that; the cost is at most that
//! much resident memory once a transfer is over.

/// Heap memory free at the top of the heap that glibc keeps instead of returning it.
const TRIM_THRESHOLD: i32 = 4 * 1024 * 1024;
/// Allocations from this size up get their own mapping (returned on free, and not worth
/// keeping); smaller ones come from the heap.
const MMAP_THRESHOLD: i32 = 1024 * 1024;

/// Applies the settings; call once at the start of `main`, before any thread starts.
/// Does nothing with allocators other than glibc's.
pub fn tune_for_streaming() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
