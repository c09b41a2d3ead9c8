//! [`Team`]: the worker threads of a multi-threaded model, which run the parts of its split
//! kernel calls (the calling thread works too).
//!
//! Why not a general pool: a model run is a chain of short kernels (10-300 us at 224x224), each
//! split into a few parts, with a dependency between every two. What costs there is the wait
//! between publishing a kernel and a worker starting on it. So while a run is in progress
//! ([`Team::session`]) the workers spin on the job counter instead of sleeping (as XNNPACK's
//! pthreadpool does); between runs they sleep on a condition variable and cost nothing.
//! Measured against the rayon pool it replaces (`mnv2c bench --threads 2`, 2026-12-01): see
//! `docs/performance.md`.
//!
//! ## What must hold
//! - **Each part runs once.** A part is claimed by a compare-and-swap on one word holding the
//!   job's sequence number and a bit per claimed part; a thread holding an older job's copy
//!   fails the sequence check and never calls its kernel.
//! - **Each thread keeps its part of the map.** A call has one part per thread, and thread `t`
//!   (the caller is 0) first claims part `t`, then any part still unclaimed. Work items are
//!   pixel strips or rows in order, so thread `t` handles about the same pixels in every layer
//!   and mostly reads what it wrote one layer earlier from its own cache; stealing only evens
//!   out a late or slow thread. Measured against two parts per thread taken in any order (the
//!   seed model, 2 threads): see `docs/performance.md`.
//! - **A job's pointers outlive every use.** [`Team::run`] returns only when every part has
//!   finished (`remaining` reaches 0, with acquire ordering, so the caller sees their writes),
//!   and after that no thread can claim a part of that job. So the kernel code and the buffers
//!   the caller borrowed for the call are never touched after `run` returns.
//! - **One run at a time.** A team serves one model call at a time: the model keeps it in a
//!   `Mutex`, held for the whole call.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::{CallPtrs, KernelFn};
use crate::{Error, Result};

/// The most parts of a job: one bit each in the low half of the claim word.
pub(super) const MAX_PARTS: usize = 32;

/// One split kernel call: run its work items `begin..end` in `parts` equal ranges
/// (`parts <= MAX_PARTS`).
#[derive(Clone, Copy)]
pub(super) struct Job {
    pub f: KernelFn,
    pub ptrs: CallPtrs,
    pub begin: i64,
    pub end: i64,
    pub parts: usize,
}

/// A published job and the sequence number that identifies it.
#[derive(Clone, Copy)]
struct Published {
    seq: u32,
    job: Job,
}

struct Shared {
    job: Mutex<Option<Published>>,
    /// `(seq << 32) | claimed parts` (bit `p` for part `p`) of the current job.
    claim: AtomicU64,
    /// Parts of the current job not finished yet.
    remaining: AtomicUsize,
    /// Sequence number of the newest job (the workers watch it).
    newest: AtomicU32,
    /// A run is in progress: idle workers spin rather than sleep.
    active: AtomicBool,
    quit: AtomicBool,
    sleep: Mutex<()>,
    wake: Condvar,
}

/// Worker threads for split kernel calls; see the module doc.
pub struct Team {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Threads per call, the caller's included.
    threads: usize,
}

impl std::fmt::Debug for Team {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Team({} threads)", self.threads)
    }
}

/// Marks a run in progress for as long as it lives (workers spin, not sleep).
#[derive(Debug)]
pub struct Session<'t>(&'t Team);

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.0.shared.active.store(false, Ordering::Relaxed);
    }
}

impl Team {
    /// A team for calls on `threads` threads: the caller and `threads - 1` workers.
    pub fn new(threads: usize) -> Result<Team> {
        let shared = Arc::new(Shared {
            job: Mutex::new(None),
            claim: AtomicU64::new(0),
            remaining: AtomicUsize::new(0),
            newest: AtomicU32::new(0),
            active: AtomicBool::new(false),
            quit: AtomicBool::new(false),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut team = Team {
            shared,
            workers: Vec::new(),
            threads: threads.max(1),
        };
        for i in 1..team.threads {
            let shared = Arc::clone(&team.shared);
            let handle = std::thread::Builder::new()
                .name(format!("mnv2c-{i}"))
                .spawn(move || work(&shared, i))
                .map_err(|e| Error::Internal(format!("cannot start {threads} threads: {e}")))?;
            // Pushed as it starts, so that dropping a half-built team stops what started.
            team.workers.push(handle);
        }
        Ok(team)
    }

    /// Threads per call, the caller's included.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Starts a run: until the session is dropped, idle workers spin on the job counter.
    pub fn session(&self) -> Session<'_> {
        self.shared.active.store(true, Ordering::Relaxed);
        let _guard = self.shared.sleep.lock();
        self.shared.wake.notify_all();
        Session(self)
    }

    /// Runs every part of `job` (on the workers and the calling thread) and returns when all
    /// have finished.
    pub(super) fn run(&self, job: Job) {
        let s = &*self.shared;
        let seq = s.newest.load(Ordering::Relaxed).wrapping_add(1);
        if let Ok(mut slot) = s.job.lock() {
            *slot = Some(Published { seq, job });
        }
        s.remaining.store(job.parts, Ordering::Relaxed);
        s.claim.store(u64::from(seq) << 32, Ordering::Release);
        s.newest.store(seq, Ordering::Release);
        if !s.active.load(Ordering::Relaxed) {
            // Outside a session the workers may sleep.
            let _guard = s.sleep.lock();
            s.wake.notify_all();
        }
        run_parts(s, Published { seq, job }, 0);
        while s.remaining.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.quit.store(true, Ordering::Relaxed);
        {
            let _guard = self.shared.sleep.lock();
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            // A worker that panicked has nothing left to clean up.
            let _ = w.join();
        }
    }
}

/// Worker `me`: wait for a job newer than the last one seen, help run it, repeat.
fn work(s: &Shared, me: usize) {
    let mut seen = s.newest.load(Ordering::Acquire);
    loop {
        loop {
            if s.quit.load(Ordering::Relaxed) {
                return;
            }
            let newest = s.newest.load(Ordering::Acquire);
            if newest != seen {
                seen = newest;
                break;
            }
            if s.active.load(Ordering::Relaxed) {
                std::hint::spin_loop();
                continue;
            }
            let Ok(guard) = s.sleep.lock() else { return };
            // Re-checked under the lock that `run`, `session` and `drop` notify under, so no
            // wake-up is lost.
            let _guard = s.wake.wait_while(guard, |_| {
                !s.active.load(Ordering::Relaxed)
                    && !s.quit.load(Ordering::Relaxed)
                    && s.newest.load(Ordering::Acquire) == seen
            });
        }
        let job = s.job.lock().ok().and_then(|j| *j);
        if let Some(p) = job {
            run_parts(s, p, me);
        }
    }
}

/// Claims and runs parts of `p`, part `me` first, until none is left (or a newer job
/// replaced it).
fn run_parts(s: &Shared, p: Published, me: usize) {
    let job = p.job;
    let all = (1u64 << job.parts) - 1;
    loop {
        let cur = s.claim.load(Ordering::Acquire);
        let claimed = cur & u64::from(u32::MAX);
        if (cur >> 32) as u32 != p.seq || claimed & all == all {
            return;
        }
        let part = if me < job.parts && claimed & (1 << me) == 0 {
            me
        } else {
            (!claimed).trailing_zeros() as usize
        };
        if s.claim
            .compare_exchange_weak(cur, cur | 1 << part, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            continue;
        }
        let parts = job.parts as i128;
        // Item range of `part`, in i128 so the products cannot overflow.
        let items = i128::from(job.end - job.begin);
        let at = |q: usize| job.begin + (items * q as i128 / parts) as i64;
        let (begin, end) = (at(part), at(part + 1));
        // SAFETY: `job` was built by `JitProgram::run_kernel_team` from a kernel that passed
        // `loops::verify` and is proven `parallel_safe`, with pointers checked by `check_args`
        // against slices the caller borrows for the whole of `Team::run`; `run` returns only
        // after this part finished (`remaining` below), so the code and the buffers are live.
        // This thread won the claim of `part` for this job's sequence number, so no other call
        // runs these items; distinct parts are disjoint item ranges, which write disjoint
        // elements (`parallel_safe`), so concurrent parts do not race. `job.ptrs` is this
        // thread's copy of the pointer array and outlives the call.
        unsafe { (job.f)(job.ptrs.array(), begin, end) };
        s.remaining.fetch_sub(1, Ordering::Release);
    }
}
