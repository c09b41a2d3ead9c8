//! Decoding a photo into 8-bit RGB the way Pillow's `Image.open(p).convert('RGB')` does.
//!
//! PNG and JPEG only (the `image` crate with just those codecs). Colour types map as Pillow
//! converts them: grey `L` -> `(L, L, L)`, grey+alpha -> the grey, RGBA -> RGB with the alpha
//! dropped (not composited), palette images are expanded by the PNG decoder; 16-bit samples keep
//! their high byte (Pillow's `RGB;16B` unpacking). JPEG pixels can differ from Pillow's libjpeg by
//! a few steps (another IDCT and upsampler: at most 4, mean 0.25 on `chelsea_160.jpg`, see
//! `tests/keras.rs`); PNG pixels are exact.
//!
//! What must hold: the image's size is read from its header and refused above [`MAX_PIXELS`]
//! before any pixel is decoded, and the decoder's allocations are capped, so a small file
//! claiming a huge image cannot exhaust memory; every decoding failure is an [`Error::Format`]
//! naming the file.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageReader, Limits};

use crate::{Error, Result};

/// The largest image `classify` decodes: 64 megapixels (an 8000x8000 photo), 192 MB as RGB.
pub const MAX_PIXELS: u64 = 64_000_000;

/// An 8-bit RGB image, rows top to bottom, `data.len() == width * height * 3`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

fn format_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Decodes a PNG or JPEG file's bytes into RGB.
pub fn decode(bytes: &[u8], path: &Path) -> Result<Rgb8> {
    let reader = || -> Result<ImageReader<Cursor<&[u8]>>> {
        let r = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| format_error(path, format!("cannot read the image: {e}")))?;
        match r.format() {
            Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => Ok(r),
            _ => Err(format_error(
                path,
                "not a PNG or JPEG image (classify reads only those)",
            )),
        }
    };
    let (w, h) = reader()?
        .into_dimensions()
        .map_err(|e| format_error(path, format!("cannot read the image header: {e}")))?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels > MAX_PIXELS {
        return Err(format_error(
            path,
            format!(
                "the image is {w}x{h} = {pixels} pixels, over the limit of {MAX_PIXELS} (64 megapixels)"
            ),
        ));
    }
    if pixels == 0 {
        return Err(format_error(path, "the image has no pixels"));
    }
    let mut limits = Limits::default();
    // 8 bytes per pixel covers RGBA16, the widest format these codecs produce.
    limits.max_alloc = Some(MAX_PIXELS * 8 + (1 << 20));
    let mut r = reader()?;
    r.limits(limits);
    let img = r
        .decode()
        .map_err(|e| format_error(path, format!("cannot decode the image: {e}")))?;
    Ok(to_rgb(img))
}

fn to_rgb(img: DynamicImage) -> Rgb8 {
    let (width, height) = (img.width() as usize, img.height() as usize);
    let data: Vec<u8> = match img {
        DynamicImage::ImageLuma8(g) => g.into_raw().iter().flat_map(|&v| [v, v, v]).collect(),
        DynamicImage::ImageLumaA8(g) => g
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        DynamicImage::ImageRgb8(c) => c.into_raw(),
        DynamicImage::ImageRgba8(c) => c
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        DynamicImage::ImageLuma16(g) => g
            .into_raw()
            .iter()
            .flat_map(|&v| [(v >> 8) as u8; 3])
            .collect(),
        DynamicImage::ImageLumaA16(g) => g
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| [(p[0] >> 8) as u8; 3])
            .collect(),
        DynamicImage::ImageRgba16(c) => c
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
            .collect(),
        other => other
            .to_rgb16()
            .into_raw()
            .iter()
            .map(|&v| (v >> 8) as u8)
            .collect(),
    };
    Rgb8 {
        width,
        height,
        data,
    }
}
