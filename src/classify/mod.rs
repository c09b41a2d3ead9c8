//! `classify`: photos in, a trained model's top classes out.
//!
//! - [`image`]: PNG/JPEG decoding to 8-bit RGB as Pillow's `convert('RGB')`, with a pixel limit
//!   checked before decoding;
//! - [`resize`]: Pillow's bicubic, antialiased `resize`, bit for bit;
//! - here: the preprocessing ([`Preprocess`]), the batch tensor, the labels file and the
//!   ranking.
//!
//! What must hold: the tensor a model sees is exactly what Keras code that resizes with Pillow
//! and preprocesses with `x / 127.5 - 1` feeds the model (for PNG inputs), so `classify` ranks
//! classes in the same order Keras does.

pub mod image;
pub mod resize;

use std::path::Path;

use crate::{Error, Result, Tensor};
pub use image::{MAX_PIXELS, Rgb8};

/// How pixels in `0..=255` become model inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preprocess {
    /// `x / 127.5 - 1`, to `[-1, 1]`: Keras's MobileNetV2 `preprocess_input` (mode `tf`).
    Tf,
    /// `(x / 255 - mean) / std` with ImageNet's mean `[0.485, 0.456, 0.406]` and std
    /// `[0.229, 0.224, 0.225]` (torchvision's convention).
    Torch,
    /// The pixel values as they are.
    None,
}

impl Preprocess {
    fn apply(self, v: u8, channel: usize) -> f32 {
        let x = f32::from(v);
        match self {
            Preprocess::Tf => x / 127.5 - 1.0,
            Preprocess::Torch => {
                const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
                const STD: [f32; 3] = [0.229, 0.224, 0.225];
                (x / 255.0 - MEAN[channel]) / STD[channel]
            }
            Preprocess::None => x,
        }
    }
}

/// Images of one size as an `[N, H, W, 3]` f32 batch.
pub fn batch(images: &[Rgb8], pre: Preprocess) -> Result<Tensor> {
    let first = images
        .first()
        .ok_or_else(|| Error::Usage("no images to classify".into()))?;
    let (w, h) = (first.width, first.height);
    let mut data = Vec::with_capacity(images.len() * w * h * 3);
    for img in images {
        if (img.width, img.height) != (w, h) {
            return Err(Error::Input(format!(
                "images of a batch must share one size: {}x{} and {w}x{h}",
                img.width, img.height
            )));
        }
        data.extend(
            img.data
                .iter()
                .enumerate()
                .map(|(i, &v)| pre.apply(v, i % 3)),
        );
    }
    Tensor::new(vec![images.len(), h, w, 3], data)
}

/// Reads a labels file: one label per line, in class order, exactly `classes` of them (a
/// trailing newline is fine; blank lines are not labels).
pub fn read_labels(path: &Path, classes: usize) -> Result<Vec<String>> {
    let text = String::from_utf8(crate::files::read(path)?).map_err(|_| Error::Format {
        path: path.to_path_buf(),
        message: "a labels file must be UTF-8 text".into(),
    })?;
    let labels: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .filter(|l| !l.trim().is_empty())
        .collect();
    if labels.len() != classes {
        return Err(Error::Format {
            path: path.to_path_buf(),
            message: format!(
                "has {} label line(s), but the model has {classes} classes",
                labels.len()
            ),
        });
    }
    Ok(labels)
}

/// The indices of the `k` largest values, largest first (ties by index).
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}
