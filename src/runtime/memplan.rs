//! The static memory plan: every activation gets a fixed offset in one arena.
//!
//! Input: buffers with a size in bytes and a lifetime `[first, last]` in kernel steps (the step
//! that writes it first, the step that reads it last). Output: an offset per buffer such that two
//! buffers whose lifetimes overlap never share a byte, every offset is a multiple of
//! [`ALIGN`] (64 bytes, a cache line), and the arena is as small as a greedy placement finds.
//!
//! The placement is greedy by size (as TFLite's arena planner): buffers are placed largest first,
//! each at the lowest aligned offset that does not collide with an already placed buffer whose
//! lifetime overlaps. The plan also reports a lower bound, the largest total size of buffers live
//! at one step, so `--emit memplan` can show how close the placement came.

use std::fmt;

/// Alignment of every buffer in the arena, in bytes.
pub const ALIGN: usize = 64;

/// One buffer to place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub name: String,
    pub bytes: usize,
    /// First step at which the buffer is live (written).
    pub first: usize,
    /// Last step at which the buffer is live (read); `last >= first`.
    pub last: usize,
}

/// A placed buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub request: Request,
    pub offset: usize,
}

/// The arena layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemPlan {
    /// In the order of the requests.
    pub placements: Vec<Placement>,
    /// Arena size in bytes (a multiple of [`ALIGN`]).
    pub arena_bytes: usize,
    /// The largest aligned total of buffers live at one step: no plan can be smaller.
    pub lower_bound: usize,
}

fn align_up(n: usize) -> Option<usize> {
    n.checked_add(ALIGN - 1).map(|v| v / ALIGN * ALIGN)
}

/// Plans the arena. `None` if a size overflows `usize` (the caller reports which model).
///
/// Cost: near-linear in the number of buffers for graphs whose buffers live a few steps each
/// (every chain-like network): a buffer is compared only with the placed buffers live at one of
/// its own steps, found through a per-step index, never with all of them (a scan of all made a
/// chain of 100,000 nodes take over 20 s).
pub fn plan(requests: &[Request]) -> Option<MemPlan> {
    let sizes: Vec<usize> = requests
        .iter()
        .map(|r| align_up(r.bytes))
        .collect::<Option<_>>()?;
    let mut order: Vec<usize> = (0..requests.len()).collect();
    // Largest first; ties by earlier start, then by request order, so the plan is deterministic.
    order.sort_by_key(|&i| (std::cmp::Reverse(sizes[i]), requests[i].first, i));

    let steps = requests.iter().map(|r| r.last + 1).max().unwrap_or(0);
    // The placed buffers live at each step.
    let mut live_at: Vec<Vec<usize>> = vec![Vec::new(); steps];
    // `seen[j] == i + 1` once buffer `j` is collected for request `i` (no clearing per request).
    let mut seen = vec![0usize; requests.len()];
    let mut offsets: Vec<Option<usize>> = vec![None; requests.len()];
    let mut arena = 0usize;
    for &i in &order {
        let r = &requests[i];
        // Placed buffers alive at the same time as `r`, by offset.
        let mut busy: Vec<(usize, usize)> = Vec::new();
        for placed in &live_at[r.first..=r.last] {
            for &j in placed {
                if seen[j] != i + 1 {
                    seen[j] = i + 1;
                    let o = offsets[j]?;
                    busy.push((o, o + sizes[j]));
                }
            }
        }
        busy.sort_unstable();
        let mut candidate = 0usize;
        for (start, end) in busy {
            if candidate.checked_add(sizes[i])? <= start {
                break;
            }
            candidate = candidate.max(end);
        }
        offsets[i] = Some(candidate);
        arena = arena.max(candidate.checked_add(sizes[i])?);
        for list in &mut live_at[r.first..=r.last] {
            list.push(i);
        }
    }

    // The lower bound by a sweep: each buffer adds its size at `first`, removes it after `last`.
    let mut delta: Vec<(usize, bool, usize)> = Vec::with_capacity(2 * requests.len());
    for (r, &s) in requests.iter().zip(&sizes) {
        delta.push((r.first, true, s));
        delta.push((r.last + 1, false, s));
    }
    // Removals first at a step: the buffer ended at the step before.
    delta.sort_unstable_by_key(|&(step, add, _)| (step, add));
    let (mut live, mut lower_bound) = (0usize, 0usize);
    for (_, add, s) in delta {
        if add {
            live = live.checked_add(s)?;
            lower_bound = lower_bound.max(live);
        } else {
            live -= s;
        }
    }
    let placements = requests
        .iter()
        .zip(offsets)
        .map(|(r, o)| Placement {
            request: r.clone(),
            offset: o.unwrap_or(0),
        })
        .collect();
    Some(MemPlan {
        placements,
        arena_bytes: arena,
        lower_bound,
    })
}

impl fmt::Display for MemPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "# arena {} bytes ({:.2} MiB), lower bound {} bytes ({:.2} MiB), {} buffers, {}-byte aligned",
            self.arena_bytes,
            self.arena_bytes as f64 / (1 << 20) as f64,
            self.lower_bound,
            self.lower_bound as f64 / (1 << 20) as f64,
            self.placements.len(),
            ALIGN
        )?;
        writeln!(
            f,
            "# {:>12} {:>12}  {:>5}..{:<5}  buffer",
            "offset", "bytes", "first", "last"
        )?;
        for p in &self.placements {
            let r = &p.request;
            writeln!(
                f,
                "  {:>12} {:>12}  {:>5}..{:<5}  {}",
                p.offset, r.bytes, r.first, r.last, r.name
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(name: &str, bytes: usize, first: usize, last: usize) -> Request {
        Request {
            name: name.into(),
            bytes,
            first,
            last,
        }
    }

    #[test]
    fn a_chain_reuses_memory() {
        // a -> b -> c -> d: at most two live at once.
        let p = plan(&[
            req("a", 1000, 0, 1),
            req("b", 1000, 1, 2),
            req("c", 1000, 2, 3),
            req("d", 1000, 3, 3),
        ])
        .unwrap();
        assert_eq!(p.lower_bound, 2 * 1024);
        assert_eq!(p.arena_bytes, 2 * 1024);
        assert!(p.placements.iter().all(|q| q.offset % ALIGN == 0));
    }

    #[test]
    fn overflowing_sizes_are_refused() {
        assert!(plan(&[req("a", usize::MAX, 0, 0)]).is_none());
    }

    proptest! {
        #[test]
        fn live_buffers_never_overlap(
            raw in prop::collection::vec((1usize..5000, 0usize..20, 0usize..6), 1..25)
        ) {
            let reqs: Vec<Request> = raw
                .iter()
                .enumerate()
                .map(|(i, &(b, f, len))| req(&format!("v{i}"), b, f, f + len))
                .collect();
            let p = plan(&reqs).unwrap();
            prop_assert!(p.arena_bytes >= p.lower_bound);
            for (i, a) in p.placements.iter().enumerate() {
                prop_assert_eq!(a.offset % ALIGN, 0);
                prop_assert!(a.offset + a.request.bytes <= p.arena_bytes);
                for b in &p.placements[i + 1..] {
                    let (ra, rb) = (&a.request, &b.request);
                    let time = ra.first <= rb.last && rb.first <= ra.last;
                    let space = a.offset < b.offset + rb.bytes && b.offset < a.offset + ra.bytes;
                    prop_assert!(!(time && space), "{:?} and {:?} collide", a, b);
                }
            }
        }
    }
}
