//! How close a result must be to a reference to count as correct: the one home of every
//! numeric tolerance, so the golden test, the CLI tests and later the JIT-vs-interpreter tests
//! all judge by the same numbers.
//!
//! The figures come from `shared/golden/README.md`: an independent ONNX Runtime rebuild agrees
//! with TensorFlow to 2.9e-5 of the largest logit, so a correct f32 implementation sits well
//! inside `1e-4 * max|logit| + 1e-5`; padding 1/1 instead of TF's 0/1 is off by more than 100%.
//! A tolerance is relative to the largest magnitude of the *reference*, not element-wise, because
//! rounding error in a long sum scales with the magnitude of the terms, not of the result.

/// Logits: `|actual - reference| <= LOGITS_REL * max|reference| + LOGITS_ABS`, element-wise.
pub const LOGITS_REL: f32 = 1e-4;
/// The absolute floor of the logits tolerance (for references that are all near zero).
pub const LOGITS_ABS: f32 = 1e-5;
/// Probabilities: `|actual - reference| <= PROBS_ABS`, element-wise.
pub const PROBS_ABS: f32 = 1e-4;
/// Intermediate block outputs (`intermediates_0.safetensors`) are judged like logits: relative
/// to the block's largest magnitude. TF-vs-ORT differences reach 1.4e-5 at `res8_1`.
pub const BLOCK_REL: f32 = 1e-4;
/// The absolute floor for block outputs.
pub const BLOCK_ABS: f32 = 1e-5;

/// The largest magnitude in `values` (0 for an empty slice; NaN propagates as NaN).
pub fn max_abs(values: &[f32]) -> f32 {
    values.iter().fold(0.0f32, |m, &v| {
        if v.is_nan() || m.is_nan() {
            f32::NAN
        } else {
            m.max(v.abs())
        }
    })
}

/// The result of comparing an actual tensor's data with a reference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    /// The largest element-wise `|actual - reference|` (NaN if any element is NaN).
    pub max_abs_diff: f32,
    /// The flat index where `max_abs_diff` occurs (the first NaN, if any).
    pub worst_index: usize,
    /// The allowed difference: `rel * max|reference| + abs`.
    pub bound: f32,
}

impl Comparison {
    /// Whether every element is within the bound (false if any difference is NaN).
    pub fn passed(&self) -> bool {
        self.max_abs_diff <= self.bound
    }
}

/// Compares `actual` with `reference` under the bound `rel * max|reference| + abs`. `None` when
/// the lengths differ.
pub fn compare(actual: &[f32], reference: &[f32], rel: f32, abs: f32) -> Option<Comparison> {
    if actual.len() != reference.len() {
        return None;
    }
    let mut worst = (0.0f32, 0usize);
    for (i, (&a, &r)) in actual.iter().zip(reference).enumerate() {
        let d = (a - r).abs();
        if d.is_nan() {
            worst = (f32::NAN, i);
            break;
        }
        if d > worst.0 {
            worst = (d, i);
        }
    }
    Some(Comparison {
        max_abs_diff: worst.0,
        worst_index: worst.1,
        bound: rel * max_abs(reference) + abs,
    })
}

/// The index of the largest value (the first one on ties); `None` for an empty slice or one
/// holding a NaN.
pub fn argmax(values: &[f32]) -> Option<usize> {
    if values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut best: Option<usize> = None;
    for (i, &v) in values.iter().enumerate() {
        if best.is_none_or(|b| v > values[b]) {
            best = Some(i);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_uses_the_reference_magnitude() {
        let r = [100.0, -1.0, 0.0];
        let c = compare(&[100.005, -1.0, 0.009], &r, LOGITS_REL, LOGITS_ABS).unwrap();
        assert_eq!(c.worst_index, 2);
        assert!((c.bound - 0.01001).abs() < 1e-6);
        assert!(c.passed());
        let c = compare(&[100.0, -1.0, 0.011], &r, LOGITS_REL, LOGITS_ABS).unwrap();
        assert!(!c.passed());
    }

    #[test]
    fn nan_never_passes() {
        let c = compare(&[f32::NAN], &[1.0], 1.0, 1.0).unwrap();
        assert!(!c.passed());
        assert!(compare(&[1.0], &[1.0, 2.0], 1.0, 1.0).is_none());
    }

    #[test]
    fn argmax_picks_first_of_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), Some(1));
        assert_eq!(argmax(&[]), None);
        assert_eq!(argmax(&[1.0, f32::NAN]), None);
    }
}
