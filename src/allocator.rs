//! The binaries' allocator: glibc's malloc, or mimalloc with `JOBWARDEN_ALLOCATOR=mimalloc`,
//! chosen once, at the process's first allocation, and kept until it exits.
//!
//! glibc's malloc is the default because it held the service's resident set lowest for the
//! same CPU: over 100,000 jobs mimalloc spent about as much CPU per check and held about 40 %
//! more memory (the README's Performance section has the side-by-side figures, which
//! `jobwarden-bench` reproduces with this variable). The variable is read with `getenv`, which
//! allocates nothing, so the choice is made before either allocator has handed out a block,
//! and no block ever reaches the other one.
//!
//! On glibc's malloc the threshold above which a block gets its own mapping is fixed at its
//! starting 128 KiB. glibc otherwise raises it to the size of any such block once it is freed
//! (a batch's buffers, a page of due jobs), after which blocks of that size come from the
//! arenas and stay resident there once freed: over 100,000 jobs that held about 9 MB more at
//! the same CPU per check. `MALLOC_MMAP_THRESHOLD_` in the environment still wins.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::CStr;
use std::sync::atomic::{AtomicU8, Ordering};

/// Set in the environment to `mimalloc` to run on mimalloc.
pub const VARIABLE: &CStr = c"JOBWARDEN_ALLOCATOR";

/// glibc's own variable for the threshold; when set, its value stands.
#[cfg(target_env = "gnu")]
const GLIBC_MMAP_THRESHOLD: &CStr = c"MALLOC_MMAP_THRESHOLD_";

/// glibc's starting threshold, kept from moving.
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

const UNDECIDED: u8 = 0;
const MIMALLOC: u8 = 1;
const SYSTEM: u8 = 2;

static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// The allocator a binary declares with `#[global_allocator]`.
pub struct Chosen;

/// The allocator this process runs on, for logs and benchmarks.
pub fn name() -> &'static str {
    match CHOICE.load(Ordering::Relaxed) {
        MIMALLOC => "mimalloc",
        // Chosen, or not the global allocator at all (a test binary): the standard library's.
        _ => "system",
    }
}

fn choice() -> u8 {
    let chosen = CHOICE.load(Ordering::Relaxed);
    if chosen != UNDECIDED {
        return chosen;
    }
    // SAFETY: getenv returns null or a pointer to a NUL-terminated string owned by the
    // environment; it is read at once, before anything could change the environment.
    let mimalloc = unsafe {
        let value = libc::getenv(VARIABLE.as_ptr());
        !value.is_null() && CStr::from_ptr(value).to_bytes() == b"mimalloc"
    };
    let wanted = if mimalloc { MIMALLOC } else { SYSTEM };
    match CHOICE.compare_exchange(UNDECIDED, wanted, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            if wanted == SYSTEM {
                fix_mmap_threshold();
            }
            wanted
        }
        Err(first) => first,
    }
}

/// Fixes glibc's mmap threshold unless the environment sets it (see the module's comment).
#[cfg(target_env = "gnu")]
fn fix_mmap_threshold() {
    // SAFETY: getenv as above; mallopt only sets a parameter of glibc's malloc and allocates
    // nothing through this allocator.
    unsafe {
        if libc::getenv(GLIBC_MMAP_THRESHOLD.as_ptr()).is_null() {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        }
    }
}

/// Other C libraries keep their own policy.
#[cfg(not(target_env = "gnu"))]
fn fix_mmap_threshold() {}

// SAFETY: every call goes to one allocator for the whole life of the process (the choice is
// made before the first block is handed out and never changes), and each of the two upholds
// GlobalAlloc's contract itself.
unsafe impl GlobalAlloc for Chosen {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if choice() == SYSTEM {
            System.alloc(layout)
        } else {
            mimalloc::MiMalloc.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if choice() == SYSTEM {
            System.alloc_zeroed(layout)
        } else {
            mimalloc::MiMalloc.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if choice() == SYSTEM {
            System.dealloc(ptr, layout)
        } else {
            mimalloc::MiMalloc.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if choice() == SYSTEM {
            System.realloc(ptr, layout, new_size)
        } else {
            mimalloc::MiMalloc.realloc(ptr, layout, new_size)
        }
    }
}
