//! The global allocator of MTRec's binaries and benchmarks.
//!
//! candle on the CPU allocates a fresh buffer for every intermediate tensor, many of them tens of
//! megabytes (a DIN attention input at batch 1024 and history 100 is 59 MB), and frees it a few
//! microseconds later. glibc's allocator maps and unmaps such blocks every time; mimalloc keeps them,
//! which is worth about 2x (`specs/rust-stack.md` §3). By default mimalloc still gives freed memory
//! back to the OS after 10 ms (`purge_delay`) and commits arena memory lazily, so the next big tensor
//! page-faults its way back in: with its defaults a DIN training step spent 20% of its time in the
//! kernel zeroing pages (`clear_page_erms`) and another 12% with the main thread spinning while the
//! other thread faulted. [`tune`] turns both off; measured with `cargo xtask bench-train --models din`
//! it takes a step from 770 to about 620 ms on 2 cores. The cost is that the process keeps its
//! peak memory until it exits, which is what a training run wants.
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: mtrec_alloc::MiMalloc = mtrec_alloc::MiMalloc;
//!
//! fn main() {
//!     mtrec_alloc::tune();
//!     // ...
//! }
//! ```

pub use mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc's `mi_option_e` (v2 and v3 headers alike).
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
/// `mi_option_purge_delay` (formerly `reset_delay`) in mimalloc's `mi_option_e`.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc keep freed memory committed: no purging back to the OS (`purge_delay = -1`) and
/// eagerly committed arenas. Call it first thing in `main`; it only changes options, so calling it
/// again or from a program that uses another allocator is harmless.
pub fn tune() {
    // SAFETY: `mi_option_set` only writes mimalloc's option table; both options are read at each
    // purge or arena creation, so setting them after start-up takes effect from then on.
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 1);
    }
}

/// The options as [`tune`] leaves them: `(purge_delay, arena_eager_commit)`.
pub fn options() -> (i64, i64) {
    // SAFETY: reads mimalloc's option table.
    unsafe {
        (
            libmimalloc_sys::mi_option_get(PURGE_DELAY) as i64,
            libmimalloc_sys::mi_option_get(ARENA_EAGER_COMMIT) as i64,
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tune_sets_both_options() {
        super::tune();
        assert_eq!(super::options(), (-1, 1));
    }
}
