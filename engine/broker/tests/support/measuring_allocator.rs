//! A global allocator for the codec tests that measures the largest single allocation a
//! piece of code asks for, so a test can bound how much memory a few bytes of input
//! make the decoder reserve, and fail with the input rather than abort the process.
//!
//! Why not just let a huge allocation fail: Rust aborts the whole process when an
//! allocation fails, and in the broker that process serves every other client. A test
//! that aborts shows neither the input nor a shrunk case. So requests of at least
//! `DIRECT_MAPPING_BYTES_MIN` are served by private anonymous `MAP_NORESERVE`
//! mappings, which the kernel grants without committing memory (unless overcommit is
//! off, `vm.overcommit_memory = 2`): a terabyte reserved and never touched costs
//! nothing, returns, and is measured. Smaller requests go to the system allocator.
//!
//! Used by `engine/broker/tests/kafka_codec.rs` and the fuzz target in `engine/broker/fuzz` (which
//! include this file by path); each installs it with `#[global_allocator]`.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// From this size on, allocations are direct mappings (see the module comment).
const DIRECT_MAPPING_BYTES_MIN: usize = 1 << 30;

/// Page alignment: what a direct mapping guarantees.
const DIRECT_MAPPING_ALIGN_MAX: usize = 4096;

thread_local! {
    /// The largest allocation this thread asked for since the last reset.
    static LARGEST_BYTES: Cell<usize> = const { Cell::new(0) };
}

pub struct MeasuringAllocator;

fn note(size_bytes: usize) {
    // `try_with`: the allocator also runs while a thread's locals are torn down.
    let _ = LARGEST_BYTES.try_with(|largest| largest.set(largest.get().max(size_bytes)));
}

fn is_direct(layout: &Layout) -> bool {
    layout.size() >= DIRECT_MAPPING_BYTES_MIN && layout.align() <= DIRECT_MAPPING_ALIGN_MAX
}

/// A new private anonymous mapping of `size_bytes`, page aligned, or null if the
/// kernel refuses it.
fn map(size_bytes: usize) -> *mut u8 {
    // SAFETY: a new anonymous mapping at an address the kernel chooses (a null hint,
    // no MAP_FIXED) replaces nothing, so no memory in use is touched.
    let address = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size_bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if address == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        address.cast()
    }
}

// SAFETY: every block is either a direct mapping (`is_direct` of its layout: at least
// `DIRECT_MAPPING_BYTES_MIN` bytes with an alignment a page satisfies) or the system
// allocator's, and the layout a block is freed or resized with is the one it was
// allocated with (GlobalAlloc's contract), so each block goes back to the allocator
// that made it. Mappings are page aligned, zero filled, and not shared.
unsafe impl GlobalAlloc for MeasuringAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        if is_direct(&layout) {
            map(layout.size())
        } else {
            // SAFETY: the caller's layout has a non-zero size (alloc's contract).
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        if is_direct(&layout) {
            map(layout.size()) // fresh anonymous pages are zero
        } else {
            // SAFETY: the caller's layout has a non-zero size (alloc_zeroed's contract).
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        if is_direct(&layout) {
            // SAFETY: a direct layout's block is the mapping `map` made for it, of
            // exactly `layout.size()` bytes, and the caller no longer uses it.
            unsafe { libc::munmap(pointer.cast(), layout.size()) };
        } else {
            // SAFETY: a non-direct layout's block came from `System` with this layout.
            unsafe { System.dealloc(pointer, layout) }
        }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size_bytes: usize) -> *mut u8 {
        note(new_size_bytes);
        // SAFETY: the alignment is the block's own, a power of two, and the caller
        // promises the new size rounded up to it does not overflow isize (realloc's
        // contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size_bytes, layout.align()) };
        if !is_direct(&layout) && !is_direct(&new_layout) {
            // SAFETY: both layouts are the system allocator's: the block came from
            // `System` with `layout`, and the new size is non-zero (realloc's contract).
            return unsafe { System.realloc(pointer, layout, new_size_bytes) };
        }
        // SAFETY: `new_layout` has a non-zero size (realloc's contract).
        let moved = unsafe { self.alloc(new_layout) };
        if !moved.is_null() {
            // SAFETY: `pointer` holds `layout.size()` bytes and `moved` at least
            // `new_size_bytes`, two distinct live blocks; the old one is freed once,
            // with its own layout, and only after the copy.
            unsafe {
                std::ptr::copy_nonoverlapping(pointer, moved, layout.size().min(new_size_bytes));
                self.dealloc(pointer, layout);
            }
        }
        moved
    }
}

/// Runs `f` and returns its output with the largest single allocation (in bytes) this
/// thread asked for while it ran.
pub fn largest_allocation_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LARGEST_BYTES.with(|largest| largest.replace(0));
    let output = f();
    let during = LARGEST_BYTES.with(|largest| largest.replace(before.max(largest.get())));
    (output, during)
}
