//! Storage folding: which activations of a band schedule live in a small *fold window* instead
//! of the arena.
//!
//! In a band schedule (`runtime::bands`) a 112x112 expansion's output (4.8 MB on the seed
//! model) is written a band at a time and read by the next kernel a few rows behind, so only
//! a few hundred KB of it are ever live at once. In the arena its stores still go to lines
//! last touched an inference ago, which come from L3 (or memory) before they can be written.
//! A folded buffer's element `e` lives at slot `(e + offset) mod W` of a window of `W` elements
//! instead, so the same few hundred KB stay in L2 through the whole group: writes hit L2, and
//! the arena shrinks. The window is mapped twice, back to back (`codegen::FoldWindow`), so any
//! `W` consecutive elements are contiguous in address space and the kernels' code is unchanged:
//! a call on work items whose accesses span `lo..=hi` gets the pointer
//! `window + ((lo + offset) mod W) - lo`. The offset (under a page, [`Fold::offset`]) keeps
//! windows a kernel reads and writes from lining up 4 KB apart. Values are unchanged too: this
//! moves data, not arithmetic.
//!
//! ## What must hold
//! - **No element is overwritten while it is live** (correctness). For every run `r` of the
//!   schedule that touches the buffer, the elements from the lowest one any run from `r` on
//!   touches up to the highest one written by runs up to `r` (or touched by `r`) span at most
//!   `W`. Then two elements live at once are at most `W - 1` apart, so they never share a slot:
//!   the one writer writes each element once (`ascending_windows`), so an element is only
//!   changed by its own write. [`plan`] computes that span from the accesses' closed forms
//!   (`loops::verify::loop_windows`) and [`check`] re-checks a plan from scratch.
//! - **Every access stays in the mapping** (safety). That is not argued here: the JIT checks,
//!   on every call with a fold window, that the call's accesses span at most `W` elements
//!   (`JitProgram::run_kernel_items`), and refuses the call otherwise.
//!
//! Which buffers fold: activations that are not graph inputs or outputs and take part in no
//! view, written by exactly one kernel in ascending windows, whose every access has a closed
//! form, of at least [`MIN_FOLD_BYTES`], and whose span is at most [`MAX_WINDOW_BYTES`] and at
//! most half the buffer.

use std::collections::HashMap;

use super::bands::Schedule;
use crate::loops::verify::{self as loop_verify, LoopWindow};
use crate::loops::{BufferKind, Program, Role};
use crate::{Error, Result};

/// The largest window: the live part of a group's buffers should stay in a core's L2 (2 MB
/// here) beside the weights of the running layer.
pub const MAX_WINDOW_BYTES: usize = 512 << 10;

/// Only activations of at least this many bytes fold: the large ones, which a layer's stores
/// would otherwise pull in from L3. Measured on the seed model, 1 thread, interleaved rounds
/// (2026-12-02, `docs/performance.md`): with 1 MB, sum of layers 6.01 ms unfolded, 5.78
/// folding; folding every buffer the schedule allows, 5.83 (the 28x28 layers' 600 KB buffers
/// ran 4-7% slower folded); 768 KB, which adds the 800 KB `res2_1/ex_dim`, against 1 MB with
/// the windows placed by [`plan`]: 6.054 -> 5.931 ms (9 rounds), 5.947 -> 5.871 (7 rounds).
pub const MIN_FOLD_BYTES: usize = 768 << 10;

/// One folded activation: its storage name and the elements its window must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fold {
    pub storage: String,
    /// The live span: the window must hold at least this many elements.
    pub elems: usize,
    /// The slot of element 0 (under a page; chosen by `slot_offsets` in this module).
    pub offset: usize,
}

/// Elements per 64-byte line, and lines per 4 KB page.
const LINE: usize = 16;
const PAGE_LINES: usize = 64;

/// The text form `--emit memplan` prints after the arena: one line per folded activation,
/// `<live span in bytes> <byte offset of element 0> <buffer>` (its window is the span rounded up
/// to whole pages).
pub fn listing(folds: &[Fold]) -> String {
    let mut out = format!(
        "# fold windows: {} activations outside the arena\n# {:>12} {:>7}  buffer\n",
        folds.len(),
        "span bytes",
        "offset"
    );
    for f in folds {
        out.push_str(&format!(
            "  {:>12} {:>7}  {}\n",
            f.elems.saturating_mul(4),
            f.offset.saturating_mul(4),
            f.storage
        ));
    }
    out
}

/// The folded activations of `p` run in `s`, in name order (see the module doc). Empty for a
/// layer-by-layer schedule of MobileNetV2, where every buffer is live whole.
pub fn plan(p: &Program, s: &Schedule) -> Vec<Fold> {
    plan_with(p, s, MIN_FOLD_BYTES, MAX_WINDOW_BYTES)
}

/// [`plan`] with other sizes (tests fold small models).
pub fn plan_with(p: &Program, s: &Schedule, min_bytes: usize, max_window: usize) -> Vec<Fold> {
    let mut folds: Vec<Fold> = candidates(p)
        .into_iter()
        .filter_map(|(name, len)| {
            let span = live_span(p, s, &name)?;
            let fits = span.checked_mul(4).is_some_and(|b| b <= max_window);
            let large = len.checked_mul(4).is_some_and(|b| b >= min_bytes);
            (fits && large && span.checked_mul(2).is_some_and(|d| d <= len)).then_some(Fold {
                storage: name,
                elems: span,
                offset: 0,
            })
        })
        .collect();
    slot_offsets(p, &mut folds);
    folds
}

/// Gives each window the slot of its element 0. Windows are page-aligned, so without offsets a
/// kernel that reads one window and writes another at the same position (a depthwise conv,
/// pixel by pixel) loads and stores addresses 4 KB apart, which the core treats as possibly
/// dependent (4K aliasing). So a window written by a kernel that reads another is placed half a
/// page (and a line) from it; the others step through the page by 7 lines. Measured on the seed
/// model, 1 thread (`docs/performance.md`): every window at offset 0 cost 3.6% of the sum of
/// layers against 7-line steps for all; these offsets gained 1.2% more on the sum and 2.8% on
/// the whole model (9 interleaved rounds).
fn slot_offsets(p: &Program, folds: &mut [Fold]) {
    let index: HashMap<String, usize> = folds
        .iter()
        .enumerate()
        .map(|(i, f)| (f.storage.clone(), i))
        .collect();
    let mut placed: Vec<Option<usize>> = vec![None; folds.len()];
    let mut step = 0;
    for k in &p.kernels {
        let Some(out) = k.buffers.iter().find(|b| b.role.writable()) else {
            continue;
        };
        let Some(&w) = index.get(out.name.as_str()) else {
            continue;
        };
        let read = k
            .buffers
            .iter()
            .filter(|b| b.role == Role::Input)
            .find_map(|b| index.get(b.name.as_str()).and_then(|&r| placed[r]));
        let lines = match read {
            Some(r) => (r + PAGE_LINES / 2 + 1) % PAGE_LINES,
            None => step * 7 % PAGE_LINES,
        };
        step += 1;
        placed[w] = Some(lines);
        folds[w].offset = lines * LINE;
    }
}

/// Checks `folds` against `p` and `s` from scratch: each is a candidate whose live span fits
/// its window.
pub fn check(p: &Program, s: &Schedule, folds: &[Fold]) -> Result<()> {
    let candidates: HashMap<String, usize> = candidates(p).into_iter().collect();
    for f in folds {
        if !candidates.contains_key(&f.storage) {
            return Err(Error::Internal(format!(
                "fold plan: {} cannot be folded",
                f.storage
            )));
        }
        match live_span(p, s, &f.storage) {
            Some(span) if span <= f.elems => {}
            span => {
                return Err(Error::Internal(format!(
                    "fold plan: {} needs a window of {span:?} elements, has {}",
                    f.storage, f.elems
                )));
            }
        }
    }
    Ok(())
}

/// Activations that may fold, with their lengths: not graph inputs or outputs, in no view,
/// written by exactly one kernel, in ascending windows.
fn candidates(p: &Program) -> Vec<(String, usize)> {
    let mut writers: HashMap<&str, usize> = HashMap::new();
    let mut ascending: HashMap<&str, bool> = HashMap::new();
    for k in &p.kernels {
        for (b, buf) in k.buffers.iter().enumerate() {
            if buf.role.writable() {
                *writers.entry(buf.name.as_str()).or_insert(0) += 1;
                let asc = buf.role == Role::Output && loop_verify::ascending_windows(k, b);
                ascending.insert(buf.name.as_str(), asc);
            }
        }
    }
    let in_view = |n: &str| p.views.iter().any(|(v, s)| v == n || s == n);
    p.buffers
        .iter()
        .filter(|(name, (_, kind))| {
            *kind == BufferKind::Activation
                && !p.inputs.contains(name)
                && !p.outputs.contains(name)
                && !in_view(name)
                && writers.get(name.as_str()) == Some(&1)
                && ascending.get(name.as_str()) == Some(&true)
        })
        .filter_map(|(name, (dims, _))| Some((name.clone(), crate::tensor::checked_product(dims)?)))
        .collect()
}

/// The largest live span of buffer `name` over the runs of `s` (see the module doc), in
/// elements; `None` if an access to it has no closed form.
fn live_span(p: &Program, s: &Schedule, name: &str) -> Option<usize> {
    // Per run that touches the buffer: (lowest, highest) element it touches, and whether it
    // writes them.
    let mut touches: Vec<(i128, i128, bool)> = Vec::new();
    let mut windows: HashMap<(usize, usize), Vec<LoopWindow>> = HashMap::new();
    for run in &s.runs {
        let k = p.kernels.get(run.kernel)?;
        for (b, buf) in k.buffers.iter().enumerate() {
            if buf.name != name {
                continue;
            }
            let w = match windows.get(&(run.kernel, b)) {
                Some(w) => w,
                None => windows
                    .entry((run.kernel, b))
                    .or_insert(loop_verify::loop_windows(k, b)?),
            };
            if let Some((lo, hi)) = loop_verify::windows_hull(w, run.items.clone()) {
                touches.push((lo, hi, buf.role.writable()));
            }
        }
    }
    // From the last run back: the lowest element touched from each run on.
    let mut lowest_from = vec![i128::MAX; touches.len() + 1];
    for (i, t) in touches.iter().enumerate().rev() {
        lowest_from[i] = lowest_from[i + 1].min(t.0);
    }
    let mut written = i128::MIN;
    let mut span = 0i128;
    for (i, &(_, hi, writes)) in touches.iter().enumerate() {
        if writes {
            written = written.max(hi);
        }
        span = span.max(written.max(hi) - lowest_from[i] + 1);
    }
    usize::try_from(span).ok()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;
    use crate::codegen::{Arg, FoldWindow, JitOptions, JitProgram};
    use crate::runtime::bands;
    use crate::runtime::bands::tests::{TINY, assert_same_bits, program, run_in};

    /// Runs `s` with the JIT: folded buffers in fold windows (each at slot offset `offset`),
    /// the rest in plain vectors; returns the graph outputs.
    fn run_folded(
        p: &Program,
        x: &[f32],
        s: &Schedule,
        folds: &[Fold],
        offset: usize,
    ) -> BTreeMap<String, Vec<f32>> {
        let jit = JitProgram::compile_kernels(&p.kernels, &JitOptions::default()).unwrap();
        let mut plain: HashMap<String, Vec<f32>> = HashMap::new();
        for (name, (dims, kind)) in &p.buffers {
            let n: usize = dims.iter().product();
            match kind {
                BufferKind::Const => {
                    plain.insert(name.clone(), p.constants[name].clone());
                }
                _ => {
                    plain.insert(name.clone(), vec![f32::NAN; n]);
                }
            }
        }
        plain.insert(p.inputs[0].clone(), x.to_vec());
        let mut windows: HashMap<String, FoldWindow> = folds
            .iter()
            .map(|f| {
                let w = FoldWindow::new(f.elems, offset).unwrap();
                (f.storage.clone(), w)
            })
            .collect();
        for run in &s.runs {
            let k = &p.kernels[run.kernel];
            let out = k.buffers.iter().find(|b| b.role.writable()).unwrap();
            let out_name = p.storage_of(&out.name).to_string();
            let mut out_vec = plain.remove(&out_name);
            let mut out_win = windows.remove(&out_name);
            {
                let mut args: Vec<Arg<'_>> = Vec::new();
                let mut out_arg = (out_vec.as_mut(), out_win.as_mut());
                for b in &k.buffers {
                    let name = p.storage_of(&b.name);
                    if name == out_name {
                        match (out_arg.0.take(), out_arg.1.take()) {
                            (_, Some(w)) => args.push(Arg::FoldedMut(w)),
                            (Some(v), None) => args.push(Arg::Write(v)),
                            (None, None) => panic!("{name} passed twice"),
                        }
                    } else if let Some(w) = windows.get(name) {
                        args.push(Arg::Folded(w));
                    } else {
                        args.push(Arg::Read(&plain[name]));
                    }
                }
                jit.run_kernel_items(run.kernel, &mut args, run.items.clone())
                    .unwrap();
            }
            if let Some(v) = out_vec {
                plain.insert(out_name.clone(), v);
            }
            if let Some(w) = out_win {
                windows.insert(out_name, w);
            }
        }
        p.outputs
            .iter()
            .map(|o| (o.clone(), plain[p.storage_of(o)].clone()))
            .collect()
    }

    /// Small models in tiny bands fold several activations into windows of a few KB, which
    /// wrap hundreds of times, and the JIT computes the same bits as the interpreter run layer
    /// by layer, at any slot offset.
    #[test]
    fn folded_runs_compute_the_same_bits() {
        for (batch, h, w, offset) in [(1, 40, 40, 0), (1, 64, 48, 1000), (2, 33, 27, 4000)] {
            let (p, x) = program(batch, h, w);
            let s = bands::schedule_with(&p, TINY);
            let folds = plan_with(&p, &s, 0, 64 << 10);
            assert!(folds.len() >= 2, "{folds:?}");
            check(&p, &s, &folds).unwrap();
            let whole = run_in(&p, &x, &bands::layer_by_layer(&p));
            let folded = run_folded(&p, &x, &s, &folds, offset);
            for (name, v) in &folded {
                let value = crate::loops::value_of_buffer(name).unwrap();
                assert_same_bits(&whole[&value], v, &format!("{name} at {batch}x{h}x{w}"));
            }
        }
    }

    #[test]
    fn plans_that_overwrite_live_elements_are_refused() {
        let (p, _) = program(1, 40, 40);
        let s = bands::schedule_with(&p, TINY);
        let folds = plan_with(&p, &s, 0, 64 << 10);
        let mut small = folds.clone();
        small[0].elems -= 1;
        let e = check(&p, &s, &small).unwrap_err().to_string();
        assert!(e.contains("needs a window"), "{e}");
        // Layer by layer, every buffer is live whole: nothing folds, and a fold is refused.
        let whole = bands::layer_by_layer(&p);
        assert!(plan_with(&p, &whole, 0, usize::MAX).is_empty());
        assert!(check(&p, &whole, &folds[..1]).is_err());
        // Graph outputs never fold.
        let output = Fold {
            storage: p.outputs[0].clone(),
            elems: 1 << 20,
            offset: 0,
        };
        let e = check(&p, &s, &[output]).unwrap_err().to_string();
        assert!(e.contains("cannot be folded"), "{e}");
    }

    /// A window written by a kernel that reads another window sits half a page and a line
    /// from it, so the kernel's loads and stores are never 4 KB apart at the same position.
    #[test]
    fn windows_a_kernel_reads_and_writes_sit_half_a_page_apart() {
        let (p, _) = program(1, 64, 48);
        let s = bands::schedule_with(&p, TINY);
        let folds = plan_with(&p, &s, 0, 64 << 10);
        let offset = |name: &str| folds.iter().find(|f| f.storage == name).map(|f| f.offset);
        let mut pairs = 0;
        for k in &p.kernels {
            let Some(out) = k.buffers.iter().find(|b| b.role.writable()) else {
                continue;
            };
            let Some(w) = offset(&out.name) else { continue };
            assert!(w < LINE * PAGE_LINES && w % LINE == 0, "{w}");
            let read = k.buffers.iter().filter(|b| b.role == Role::Input);
            if let Some(r) = read.filter_map(|b| offset(&b.name)).next() {
                let apart = (w + LINE * PAGE_LINES - r) % (LINE * PAGE_LINES);
                assert_eq!(apart, LINE * (PAGE_LINES / 2 + 1), "{}", k.name);
                pairs += 1;
            }
        }
        assert!(pairs > 0, "{folds:?}");
    }

    /// The JIT refuses a window smaller than a call's accesses instead of running off it.
    #[test]
    fn the_jit_refuses_windows_smaller_than_a_call() {
        let (p, x) = program(1, 40, 40);
        let jit = JitProgram::compile_kernels(&p.kernels[..1], &JitOptions::default()).unwrap();
        let k = &p.kernels[0];
        let consts: Vec<&[f32]> = k
            .buffers
            .iter()
            .map(|b| p.constants.get(&b.name).map_or(&x[..], |v| &v[..]))
            .collect();
        let mut window = FoldWindow::new(1, 0).unwrap();
        let mut args: Vec<Arg<'_>> = k
            .buffers
            .iter()
            .zip(&consts)
            .map(|(b, c)| match b.role {
                Role::Output => None,
                _ => Some(Arg::Read(c)),
            })
            .map(|a| a.unwrap_or(Arg::Read(&[])))
            .collect();
        let out = k
            .buffers
            .iter()
            .position(|b| b.role == Role::Output)
            .unwrap();
        args[out] = Arg::FoldedMut(&mut window);
        let e = jit.run_kernel(0, &mut args).unwrap_err().to_string();
        assert!(e.contains("more than its fold window"), "{e}");
    }
}
