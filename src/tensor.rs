//! A dense f32 tensor in row-major (C) order: the unit of data passed between stages, read from
//! and written to `.npy` and `.safetensors` files; and [`TensorView`], the same borrowed.
//!
//! Invariant: `data.len()` is the product of `dims` (checked at construction).
//! [`checked_product`] is the one place a shape's element count is computed from dimensions a
//! user chose: it is overflow-checked, so no size arithmetic wraps.

use std::collections::BTreeMap;

use crate::graph::TensorType;
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    dims: Vec<usize>,
    data: Vec<f32>,
}

/// Tensors by name: weights as loaded, or every constant of a graph once bound.
pub type TensorMap = BTreeMap<String, Tensor>;

/// The overflow-checked product of dimensions: the element count of a shape, or `None` if it
/// does not fit `usize`.
pub fn checked_product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// The message for data that does not fill a shape.
fn length_mismatch(dims: &[usize], len: usize) -> Error {
    match checked_product(dims) {
        Some(n) => Error::Input(format!(
            "shape {} holds {n} values, the data has {len}",
            TensorType::new(dims.to_vec())
        )),
        None => Error::TooLarge(format!(
            "shape {} has more elements than fit in memory",
            TensorType::new(dims.to_vec())
        )),
    }
}

impl Tensor {
    /// A tensor from its shape and data. Fails ([`Error::Input`]) if the data length is not the
    /// shape's element count, or ([`Error::TooLarge`]) if that count overflows.
    pub fn new(dims: Vec<usize>, data: Vec<f32>) -> Result<Tensor> {
        if checked_product(&dims) != Some(data.len()) {
            return Err(length_mismatch(&dims, data.len()));
        }
        Ok(Tensor { dims, data })
    }

    /// A tensor of zeros. Fails with [`Error::TooLarge`] if the byte count overflows, and with
    /// [`Error::OutOfMemory`] if the memory cannot be allocated: sizes come from users
    /// (`--batch 100000 --height 10000`), and `vec![0.0; n]` would abort the process on a
    /// failed allocation instead of returning an error.
    pub fn zeros(dims: Vec<usize>) -> Result<Tensor> {
        let ty = TensorType::new(dims);
        let (n, bytes) = ty
            .num_elements()
            .zip(ty.num_bytes())
            .ok_or_else(|| Error::TooLarge(format!("a tensor of shape {ty}")))?;
        let mut data = Vec::new();
        data.try_reserve_exact(n).map_err(|_| Error::OutOfMemory {
            what: format!("a tensor of shape {ty}"),
            bytes,
        })?;
        data.resize(n, 0.0);
        Ok(Tensor {
            dims: ty.dims,
            data,
        })
    }

    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// The graph IR type of this tensor.
    pub fn ty(&self) -> TensorType {
        TensorType::new(self.dims.clone())
    }

    /// The same data under another shape with as many elements.
    pub fn reshaped(self, dims: Vec<usize>) -> Result<Tensor> {
        Tensor::new(dims, self.data)
    }

    /// A borrowed view of this tensor.
    pub fn view(&self) -> TensorView<'_> {
        TensorView {
            dims: &self.dims,
            data: &self.data,
        }
    }
}

/// A borrowed tensor: a shape and a slice of row-major f32 data of that many elements. Lets a
/// caller run a model on data it already holds (an image buffer, a slice of a batch) without
/// copying it into a [`Tensor`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorView<'a> {
    dims: &'a [usize],
    data: &'a [f32],
}

impl<'a> TensorView<'a> {
    /// A view of `data` as a tensor of shape `dims`; fails like [`Tensor::new`] if the data
    /// length is not the shape's element count.
    pub fn new(dims: &'a [usize], data: &'a [f32]) -> Result<TensorView<'a>> {
        if checked_product(dims) != Some(data.len()) {
            return Err(length_mismatch(dims, data.len()));
        }
        Ok(TensorView { dims, data })
    }

    pub fn dims(&self) -> &'a [usize] {
        self.dims
    }

    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// The graph IR type of the viewed tensor.
    pub fn ty(&self) -> TensorType {
        TensorType::new(self.dims.to_vec())
    }
}

/// Anything a model can read as an input tensor: a [`Tensor`], a [`TensorView`] of borrowed
/// data, or a reference to either. The run methods of
/// [`CompiledModel`](crate::CompiledModel) take a slice of any one of them.
pub trait AsTensorView: Sync {
    fn as_view(&self) -> TensorView<'_>;
}

impl AsTensorView for Tensor {
    fn as_view(&self) -> TensorView<'_> {
        self.view()
    }
}

impl AsTensorView for TensorView<'_> {
    fn as_view(&self) -> TensorView<'_> {
        *self
    }
}

impl<T: AsTensorView + ?Sized> AsTensorView for &T {
    fn as_view(&self) -> TensorView<'_> {
        (**self).as_view()
    }
}

impl<'a> From<&'a Tensor> for TensorView<'a> {
    fn from(t: &'a Tensor) -> TensorView<'a> {
        t.view()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `zeros` used `vec![0.0; n]`, which aborts the process (with a backtrace)
    /// when the allocation fails; sizes that fit `usize` but not in memory must give an error
    /// that says which.
    #[test]
    fn zeros_too_large_to_allocate_is_an_error_not_an_abort() {
        // 2^50 elements = 4 PiB: fits usize and isize, exceeds any address space.
        let e = Tensor::zeros(vec![1 << 30, 1 << 20]).unwrap_err();
        assert!(
            matches!(e, Error::OutOfMemory { bytes, .. } if bytes == 1 << 52),
            "{e}"
        );
        // Overflowing byte count.
        let e = Tensor::zeros(vec![usize::MAX / 2, 1]).unwrap_err();
        assert!(matches!(e, Error::TooLarge(_)), "{e}");
        let e = Tensor::zeros(vec![usize::MAX, 2]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("too large: a tensor of shape f32[{},2]", usize::MAX)
        );
        assert_eq!(Tensor::zeros(vec![2, 3]).unwrap().data(), &[0.0; 6]);
    }

    #[test]
    fn new_says_why_the_data_does_not_fit() {
        let e = Tensor::new(vec![2, 3], vec![0.0; 5]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "input: shape f32[2,3] holds 6 values, the data has 5"
        );
        let data = [1.0, 2.0];
        assert_eq!(
            TensorView::new(&[2, 2], &data).unwrap_err().to_string(),
            "input: shape f32[2,2] holds 4 values, the data has 2"
        );
        let v = TensorView::new(&[1, 2], &data).unwrap();
        assert_eq!((v.dims(), v.data()), (&[1, 2][..], &data[..]));
    }

    #[test]
    fn checked_product_overflows_to_none() {
        assert_eq!(checked_product(&[]), Some(1));
        assert_eq!(checked_product(&[2, 3, 4]), Some(24));
        assert_eq!(checked_product(&[usize::MAX, 2]), None);
        assert_eq!(checked_product(&[usize::MAX, 0]), Some(0));
    }
}
