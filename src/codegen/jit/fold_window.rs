//! The memory of a folded activation (`runtime::fold`): `len` f32 mapped twice, back to back.
//!
//! Element `e` of a folded buffer lives in slot `(e + offset) mod len`. Because the second half
//! of the mapping is the same memory as the first, any `len` consecutive elements starting in
//! the first half are contiguous in address space, so a kernel reads and writes the window with
//! its usual addressing: [`JitProgram::run_kernel_items`](super::JitProgram::run_kernel_items)
//! passes `base() + ((lo + offset) mod len) - lo` for a call whose accesses span
//! `lo..lo + len`. The offset (under a page) keeps two windows a kernel reads and writes from
//! lining up 4 KB apart (`runtime::fold::slot_offsets`).
//!
//! What must hold: the mapping is `2 * len * 4` bytes, page-aligned, both halves backing the
//! same `len * 4` bytes of one anonymous file, readable and writable, and owned by this value
//! alone until `Drop` unmaps it. Only Linux has it (`memfd_create`); elsewhere, or when the
//! system refuses, [`FoldWindow::new`] returns `None` and nothing is folded.

/// A double-mapped window (see the module doc).
#[derive(Debug)]
pub struct FoldWindow {
    base: *mut f32,
    len: usize,
    /// Element `e` lives at slot `(e + offset) mod len`.
    offset: usize,
}

// SAFETY: the mapping is owned by this value alone (nothing else holds its address) and is
// only accessed through `&self`/`&mut self` borrows, as any owned buffer; moving it to or
// sharing it with another thread is as safe as for a `Vec<f32>`.
unsafe impl Send for FoldWindow {}
// SAFETY: as for `Send`: shared borrows only pass the address to kernels that read it.
unsafe impl Sync for FoldWindow {}

impl FoldWindow {
    /// A window of at least `min_len` elements, rounded up to whole pages, whose element 0
    /// lives at slot `offset` (mod its length); `None` where double mapping is unavailable (not
    /// Linux, or a system call failed).
    pub fn new(min_len: usize, offset: usize) -> Option<FoldWindow> {
        #[cfg(target_os = "linux")]
        {
            linux::map(min_len).map(|(base, len)| FoldWindow {
                base,
                len,
                offset: offset % len,
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (min_len, offset);
            None
        }
    }

    /// The slot of element 0.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Elements per copy.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: a window has at least one page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start of the first copy.
    pub(super) fn base(&self) -> *mut f32 {
        self.base
    }
}

impl Drop for FoldWindow {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        // SAFETY: `base` is the start of the `2 * len * 4`-byte mapping this value owns (made
        // by `linux::map`); no borrow of it outlives `self`.
        unsafe {
            libc::munmap(self.base.cast(), 2 * self.len * 4);
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    /// The base and length (elements) of a new double mapping of at least `min_len` elements.
    pub(super) fn map(min_len: usize) -> Option<(*mut f32, usize)> {
        // SAFETY: `sysconf` only reads a system constant.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
        let bytes = min_len
            .max(1)
            .checked_mul(4)?
            .checked_next_multiple_of(page)?;
        let total = bytes.checked_mul(2)?;
        let size = libc::off_t::try_from(bytes).ok()?;
        // SAFETY: plain system calls on a file descriptor this function owns (closed on every
        // path once the mappings hold their own references) and on a fresh reservation of
        // `total` bytes that nothing else knows of: the two MAP_FIXED mappings replace exactly
        // its two halves, and any failure unmaps the whole reservation before returning.
        unsafe {
            let fd = libc::memfd_create(c"mnv2c-fold".as_ptr(), libc::MFD_CLOEXEC);
            if fd < 0 {
                return None;
            }
            if libc::ftruncate(fd, size) != 0 {
                libc::close(fd);
                return None;
            }
            let none = libc::PROT_NONE;
            let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
            let base = libc::mmap(std::ptr::null_mut(), total, none, anon, -1, 0);
            if base == libc::MAP_FAILED {
                libc::close(fd);
                return None;
            }
            let rw = libc::PROT_READ | libc::PROT_WRITE;
            let shared = libc::MAP_SHARED | libc::MAP_FIXED;
            let second = base.cast::<u8>().add(bytes).cast();
            let a = libc::mmap(base, bytes, rw, shared, fd, 0);
            let b = libc::mmap(second, bytes, rw, shared, fd, 0);
            libc::close(fd);
            if a != base || b != second {
                libc::munmap(base, total);
                return None;
            }
            Some((base.cast(), bytes / 4))
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn both_halves_are_the_same_memory() {
        let w = FoldWindow::new(1000, 0).expect("memfd double mapping");
        assert!(w.len() >= 1000 && (w.len() * 4).is_multiple_of(4096));
        // SAFETY: both halves are mapped read-write and owned by `w`; raw accesses only.
        unsafe {
            w.base().add(3).write_volatile(7.5);
            assert_eq!(w.base().add(w.len() + 3).read_volatile(), 7.5);
        }
    }
}
