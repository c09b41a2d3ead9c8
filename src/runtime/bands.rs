//! The band schedule: the order of a program's kernel calls, each on a range of its work items.
//!
//! Run layer by layer, a network whose activations are larger than a core's L2 cache streams
//! every one of them through L3 twice (written by one kernel, read back by the next): the
//! 112x112 and 56x56 layers of MobileNetV2 spend more time on that than on arithmetic. The band
//! schedule runs a *group* of consecutive kernels in bands instead: a slice of the first
//! kernel's work items, then the slice of the next kernel that the finished part of its input
//! allows, and so on, so that each slice is read while it is still in L2. Nothing is fused or
//! recomputed: every work item still runs once, with the same code, so every element is
//! computed by the same operations in the same order as layer by layer (bit-identical results).
//!
//! ## What must hold
//! - **Dependencies.** A run of kernel `B` on items `b..e` reads a buffer written by an earlier
//!   kernel `A` of the group only below the first element that `A`'s not yet run items may
//!   write. That bound comes from the loop-IR verifier: `A`'s work items write their buffer in
//!   ascending disjoint windows (`loops::verify::ascending_windows`), so after items `0..a` no
//!   later item writes below item `a`'s window; `B`'s reads over `b..e` have a hull from
//!   `loops::verify::item_hull`. Every buffer so read has exactly one writer (a buffer written by
//!   two kernels ends a group), and is not a view. [`verify`] checks a schedule against these
//!   rules from scratch; [`schedule`] only builds ones it accepts.
//! - **Coverage.** Each kernel's items run exactly once, in ascending order, in consecutive runs.
//! - **Memory.** The memory plan gives every buffer a lifetime in *runs* (its writer's first run
//!   to its last reader's last run), so no buffer's storage is reused while a band still needs it.
//!
//! Which kernels join a group: consecutive ones with more than one work item, exactly one
//! buffer written (by no other kernel), in ascending windows, and no views. A kernel with a
//! narrow output ([`Sizes::narrow`]) ends its group; a group holds at most [`Sizes::group`]
//! bytes of outputs. The number of bands of a group is its largest output over
//! [`Sizes::band`]; a group of one kernel, or of one band, runs whole.
//!
//! Only a one-thread model runs in bands: with more threads, each thread keeps its own range of
//! every layer, which already stays in its core's L2, and bands would only add team calls.

use std::collections::HashMap;
use std::ops::Range;

use crate::loops::verify::{self as loop_verify, LoopWindow};
use crate::loops::{Program, Role};
use crate::{Error, Result};

/// The sizes that shape groups and bands (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Bytes of a group's largest output per band: a band's slices of the group's buffers
    /// should stay in a core's L2.
    pub band: usize,
    /// A kernel whose output is smaller than this (a block's projection) ends its group: its
    /// consumers read it from L2 whichever way they run.
    pub narrow: usize,
    /// The most bytes of outputs in one group: they all stay live until its last band.
    pub group: usize,
}

/// The sizes of [`schedule`], measured on the seed model (`docs/performance.md`): a band of
/// 64-256 KB ran the 112x112 and 56x56 layers fastest on a 2 MB L2; groups of at most 8 MB
/// keep the arena at 6.8 MB (5.7 MB layer by layer; 1.5 MB with the large buffers folded,
/// `runtime::fold`).
pub const SIZES: Sizes = Sizes {
    band: 128 << 10,
    narrow: 512 << 10,
    group: 8 << 20,
};

/// One kernel call: kernel `kernel` on work items `items`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub kernel: usize,
    pub items: Range<i64>,
}

/// The runs of a program, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    pub runs: Vec<Run>,
}

impl Schedule {
    /// The text form `--emit memplan` prints after the memory plan: a header, then one line
    /// per run, `<run> k<kernel> <first>..<end> <kernel name>` (a buffer's `first..last` in the
    /// plan are run numbers).
    pub fn listing(&self, p: &Program) -> String {
        let mut out = format!(
            "# schedule: {} runs of {} kernels (one thread)\n# {:>5}  {:>6}  {:>13}  name\n",
            self.runs.len(),
            p.kernels.len(),
            "run",
            "kernel",
            "items"
        );
        for (i, r) in self.runs.iter().enumerate() {
            let name = p.kernels.get(r.kernel).map_or("?", |k| k.name.as_str());
            let items = format!("{}..{}", r.items.start, r.items.end);
            out.push_str(&format!(
                "  {i:>5}  {:>6}  {items:>13}  {name}\n",
                format!("k{}", r.kernel)
            ));
        }
        out
    }
}

/// What the schedule needs of one kernel.
struct Info {
    items: i64,
    /// The storage name of each buffer and whether the kernel writes it.
    buffers: Vec<(String, Role)>,
    /// Whether the kernel may join a group.
    bandable: bool,
    /// Whether it writes its one output in ascending windows (`verify::ascending_windows`).
    ascending: bool,
    /// Per buffer, its accesses in closed form (`verify::loop_windows`), where they have one.
    windows: Vec<Option<Vec<LoopWindow>>>,
    /// Output bytes.
    out_bytes: usize,
}

fn infos(p: &Program) -> Vec<Info> {
    let mut writers: HashMap<&str, usize> = HashMap::new();
    for k in &p.kernels {
        for b in k.buffers.iter().filter(|b| b.role.writable()) {
            *writers.entry(p.storage_of(&b.name)).or_insert(0) += 1;
        }
    }
    p.kernels
        .iter()
        .map(|k| {
            let items = loop_verify::work_items(k).unwrap_or(0);
            let written: Vec<usize> = (0..k.buffers.len())
                .filter(|&b| k.buffers[b].role.writable())
                .collect();
            let out_bytes = match written[..] {
                [b] => k.buffers[b].len().unwrap_or(0).saturating_mul(4),
                _ => 0,
            };
            let plain = k.buffers.iter().all(|b| {
                p.storage_of(&b.name) == b.name
                    && (b.role != Role::Output || writers.get(b.name.as_str()) == Some(&1))
                    && b.role != Role::Scratch
            });
            let ascending = matches!(written[..], [b] if k.buffers[b].role == Role::Output
                && loop_verify::ascending_windows(k, b));
            let bandable = items > 1 && plain && ascending;
            Info {
                items,
                buffers: k
                    .buffers
                    .iter()
                    .map(|b| (p.storage_of(&b.name).to_string(), b.role))
                    .collect(),
                bandable,
                ascending,
                out_bytes,
                // Constants are never produced by a kernel: no window needed.
                windows: (0..k.buffers.len())
                    .map(|b| match k.buffers[b].role {
                        Role::Const => None,
                        _ => loop_verify::loop_windows(k, b),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The hull of the elements of its buffer `buf` that kernel `i`'s items `items` access.
fn hull(
    p: &Program,
    infos: &[Info],
    i: usize,
    buf: usize,
    items: Range<i64>,
) -> Option<(i128, i128)> {
    match infos[i].windows.get(buf)? {
        Some(w) => loop_verify::windows_hull(w, items),
        None => loop_verify::item_hull(&p.kernels[i], buf, items),
    }
}

/// The first element kernel `i`'s items from `a` on may access in its buffer `buf` (which it
/// accesses in ascending windows): the start of item `a`'s window.
fn window_start(p: &Program, infos: &[Info], i: usize, buf: usize, a: i64) -> Option<i128> {
    if a >= infos[i].items {
        return Some(i128::MAX);
    }
    hull(p, infos, i, buf, a..a + 1).map(|h| h.0)
}

/// The fewest items of producer `i` (writing `buf` in ascending windows) after which no later
/// item accesses an element at or below `m` (a binary search: window starts ascend).
fn items_covering(p: &Program, infos: &[Info], i: usize, buf: usize, m: i128) -> Option<i64> {
    let (mut lo, mut hi) = (0i64, infos[i].items);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if window_start(p, infos, i, buf, mid)? > m {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo)
}

/// An edge of a group: consumer kernel `consumer` reads its buffer `at` (index in its
/// declaration), which producer kernel `producer` writes as its buffer `out`.
struct Edge {
    consumer: usize,
    at: usize,
    producer: usize,
    out: usize,
}

/// The band schedule of `p` (see the module doc); every kernel on all its items, in program
/// order, where no group forms.
pub fn schedule(p: &Program) -> Schedule {
    schedule_with(p, SIZES)
}

/// Every kernel on all its work items, in program order (layer by layer).
pub fn layer_by_layer(p: &Program) -> Schedule {
    Schedule {
        runs: p
            .kernels
            .iter()
            .enumerate()
            .map(|(i, k)| Run {
                kernel: i,
                items: 0..loop_verify::work_items(k).unwrap_or(0),
            })
            .collect(),
    }
}

/// [`schedule`] with other sizes (tests use small ones to band small models).
pub fn schedule_with(p: &Program, sizes: Sizes) -> Schedule {
    let infos = infos(p);
    let mut runs = Vec::new();
    let mut group: Vec<usize> = Vec::new();
    let mut group_bytes = 0usize;
    for (i, info) in infos.iter().enumerate() {
        if info.bandable {
            if group_bytes.saturating_add(info.out_bytes) > sizes.group {
                banded(p, &infos, &group, sizes.band, &mut runs);
                group.clear();
                group_bytes = 0;
            }
            group.push(i);
            group_bytes = group_bytes.saturating_add(info.out_bytes);
            if info.out_bytes < sizes.narrow {
                banded(p, &infos, &group, sizes.band, &mut runs);
                group.clear();
                group_bytes = 0;
            }
            continue;
        }
        banded(p, &infos, &group, sizes.band, &mut runs);
        group.clear();
        group_bytes = 0;
        runs.push(Run {
            kernel: i,
            items: 0..info.items,
        });
    }
    banded(p, &infos, &group, sizes.band, &mut runs);
    let s = Schedule { runs };
    // A schedule the checker refuses (it should not happen) falls back to layer by layer.
    match check(p, &infos, &s) {
        Ok(()) => s,
        Err(_) => layer_by_layer(p),
    }
}

/// Appends the runs of one group: bands driven by each kernel's share, pulled forward by what
/// its consumers in the group need.
fn banded(p: &Program, infos: &[Info], group: &[usize], band_bytes: usize, runs: &mut Vec<Run>) {
    let largest = group.iter().map(|&i| infos[i].out_bytes).max().unwrap_or(0);
    let bands = largest.div_ceil(band_bytes.max(1)).max(1) as i64;
    if group.len() < 2 || bands < 2 {
        for &i in group {
            runs.push(Run {
                kernel: i,
                items: 0..infos[i].items,
            });
        }
        return;
    }
    let mut edges = Vec::new();
    for (gj, &j) in group.iter().enumerate() {
        for (at, (name, role)) in infos[j].buffers.iter().enumerate() {
            if *role != Role::Input {
                continue;
            }
            for &i in &group[..gj] {
                if let Some(out) = infos[i]
                    .buffers
                    .iter()
                    .position(|(n, r)| *r == Role::Output && n == name)
                {
                    edges.push(Edge {
                        consumer: j,
                        at,
                        producer: i,
                        out,
                    });
                }
            }
        }
    }
    let mut done: HashMap<usize, i64> = group.iter().map(|&i| (i, 0)).collect();
    for s in 1..=bands {
        let mut need: HashMap<usize, i64> = HashMap::new();
        for &j in group.iter().rev() {
            let share = ((i128::from(infos[j].items) * i128::from(s)) / i128::from(bands)) as i64;
            let mut n = share.max(done[&j]).max(need.get(&j).copied().unwrap_or(0));
            n = n.min(infos[j].items);
            need.insert(j, n);
            for e in edges.iter().filter(|e| e.consumer == j) {
                let required = if n == 0 {
                    0
                } else {
                    hull(p, infos, j, e.at, 0..n)
                        .and_then(|(_, m)| items_covering(p, infos, e.producer, e.out, m))
                        .unwrap_or(infos[e.producer].items)
                };
                let entry = need.entry(e.producer).or_insert(0);
                *entry = (*entry).max(required);
            }
        }
        for &i in group {
            let (from, to) = (done[&i], need[&i]);
            if to > from {
                runs.push(Run {
                    kernel: i,
                    items: from..to,
                });
                done.insert(i, to);
            }
        }
    }
}

/// Checks a schedule against `p` (see the module doc): each kernel's items run once, in
/// ascending consecutive runs; a run reads a buffer that another kernel writes only once that
/// kernel ran all its items, or, when the writer writes it in ascending windows, only below the
/// first element its remaining items may write.
pub fn verify(p: &Program, s: &Schedule) -> Result<()> {
    check(p, &infos(p), s)
}

fn check(p: &Program, infos: &[Info], s: &Schedule) -> Result<()> {
    let fail = |m: String| Err(Error::Internal(format!("band schedule: {m}")));
    let mut writer: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    for (i, info) in infos.iter().enumerate() {
        for (b, (name, role)) in info.buffers.iter().enumerate() {
            if role.writable() {
                writer.entry(name.as_str()).or_default().push((i, b));
            }
        }
    }
    let mut done = vec![0i64; infos.len()];
    for r in &s.runs {
        let Some(info) = infos.get(r.kernel) else {
            return fail(format!("no kernel {}", r.kernel));
        };
        let empty = r.items.end <= r.items.start && info.items != 0;
        if r.items.start != done[r.kernel] || empty || r.items.end > info.items {
            return fail(format!(
                "kernel {} runs items {:?} after {} of {}",
                r.kernel, r.items, done[r.kernel], info.items
            ));
        }
        for (at, (name, role)) in info.buffers.iter().enumerate() {
            if *role != Role::Input {
                continue;
            }
            for &(w, out) in writer.get(name.as_str()).map_or(&[][..], |v| &v[..]) {
                if done[w] == infos[w].items {
                    continue;
                }
                let ok = writer[name.as_str()].len() == 1
                    && infos[w].ascending
                    && match (
                        hull(p, infos, r.kernel, at, r.items.clone()),
                        window_start(p, infos, w, out, done[w]),
                    ) {
                        (Some((_, m)), Some(first)) => m < first,
                        (None, _) => true,
                        _ => false,
                    };
                if !ok {
                    return fail(format!(
                        "kernel {} items {:?} read {name} before kernel {w} wrote it",
                        r.kernel, r.items
                    ));
                }
            }
        }
        done[r.kernel] = r.items.end;
    }
    match done.iter().zip(infos).position(|(d, i)| *d != i.items) {
        Some(k) => fail(format!(
            "kernel {k} runs {} of {} items",
            done[k], infos[k].items
        )),
        None => Ok(()),
    }
}

/// Small models and band sizes, shared with `runtime::fold`'s tests.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frontend::{Config, mobilenet_v2, weights};
    use crate::loops::interp;

    /// Sizes that band a small model's layers (its largest output is tens of KB).
    pub(crate) const TINY: Sizes = Sizes {
        band: 2 << 10,
        narrow: 8 << 10,
        group: 1 << 20,
    };

    /// A small MobileNetV2 (optimised, lowered) and one input for it.
    pub(crate) fn program(batch: usize, height: usize, width: usize) -> (Program, Vec<f32>) {
        let config = Config {
            num_classes: 7,
            batch,
            height,
            width,
        };
        let mut g = mobilenet_v2(&config).unwrap();
        crate::passes::optimize(&mut g).unwrap();
        let consts = weights::bind(&g, &weights::seeded(&g, 3).unwrap()).unwrap();
        let p = crate::lower::lower(&g, &consts).unwrap();
        let n = batch * height * width * 3;
        let x = (0..n)
            .map(|i| ((i * 7919) % 255) as f32 / 64.0 - 2.0)
            .collect();
        (p, x)
    }

    /// Asserts that `got` holds exactly the bits of `expected`.
    pub(crate) fn assert_same_bits(expected: &[f32], got: &[f32], what: &str) {
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert!(bits(expected) == bits(got), "{what}");
    }

    /// The program's outputs, its kernels run in `s`'s order in the interpreter.
    pub(crate) fn run_in(
        p: &Program,
        x: &[f32],
        s: &Schedule,
    ) -> std::collections::BTreeMap<String, Vec<f32>> {
        let input = crate::loops::value_of_buffer(&p.inputs[0]).unwrap();
        let inputs = [(input, x.to_vec())].into_iter().collect();
        interp::execute_runs(
            p,
            &inputs,
            s.runs.iter().map(|r| (r.kernel, r.items.clone())),
        )
        .unwrap()
    }

    #[test]
    fn small_bands_form_groups_and_verify() {
        let (p, _) = program(1, 64, 48);
        let s = schedule_with(&p, TINY);
        verify(&p, &s).unwrap();
        assert!(s.runs.len() > p.kernels.len() * 2, "{} runs", s.runs.len());
        // Layer by layer is a schedule too, and the default one forms no bands at this size.
        verify(&p, &layer_by_layer(&p)).unwrap();
        assert_eq!(schedule(&p), layer_by_layer(&p));
    }

    /// Runs of consecutive item ranges compute what whole kernels compute, bit for bit.
    #[test]
    fn runs_in_bands_compute_the_same_bits() {
        for (batch, h, w) in [(1, 40, 40), (2, 33, 27)] {
            let (p, x) = program(batch, h, w);
            let whole = run_in(&p, &x, &layer_by_layer(&p));
            let s = schedule_with(&p, TINY);
            assert!(s.runs.len() > p.kernels.len() + 20, "{} runs", s.runs.len());
            let banded = run_in(&p, &x, &s);
            for (name, v) in &whole {
                assert_same_bits(v, &banded[name], &format!("{name} at {batch}x{h}x{w}"));
            }
        }
    }

    #[test]
    fn schedules_that_read_too_early_or_skip_items_are_refused() {
        let (p, _) = program(1, 64, 48);
        let s = schedule_with(&p, TINY);
        // A consumer run moved before the run of its producer that it waits for.
        let at = (1..s.runs.len())
            .find(|&i| s.runs[i].kernel > s.runs[i - 1].kernel && s.runs[i].items.start == 0)
            .unwrap();
        let mut early = s.clone();
        early.runs.swap(at - 1, at);
        let e = verify(&p, &early).unwrap_err().to_string();
        assert!(e.contains("before kernel"), "{e}");
        // A run dropped: its kernel never finishes (or the next run does not follow on).
        let mut short = s.clone();
        short.runs.remove(0);
        assert!(verify(&p, &short).is_err());
        let mut twice = s.clone();
        twice.runs.insert(1, s.runs[0].clone());
        let e = verify(&p, &twice).unwrap_err().to_string();
        assert!(e.contains("runs items"), "{e}");
        let mut missing = s;
        missing.runs.pop();
        let e = verify(&p, &missing).unwrap_err().to_string();
        assert!(e.contains("items"), "{e}");
    }
}
