//! A dense f32 tensor in row-major (C) order: the unit of data passed between stages, read from
//! and written to `.npy` and `.safetensors` files.
//!
//! Invariant: `data.len()` is the product of `dims` (checked at construction).

use std::collections::BTreeMap;

use crate::graph::TensorType;

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    dims: Vec<usize>,
    data: Vec<f32>,
}

/// Tensors by name: weights as loaded, or every constant of a graph once bound.
pub type TensorMap = BTreeMap<String, Tensor>;

impl Tensor {
    /// A tensor from its shape and data; `None` if the data length is not the shape's product.
    pub fn new(dims: Vec<usize>, data: Vec<f32>) -> Option<Tensor> {
        let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        (n == data.len()).then_some(Tensor { dims, data })
    }

    /// A tensor of zeros; `None` if the element count overflows or the memory cannot be
    /// allocated. Sizes come from users (`--batch 100000 --height 10000`), and `vec![0.0; n]`
    /// would abort the process on a failed allocation instead of returning an error.
    pub fn zeros(dims: Vec<usize>) -> Option<Tensor> {
        let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        let mut data = Vec::new();
        data.try_reserve_exact(n).ok()?;
        data.resize(n, 0.0);
        Some(Tensor { dims, data })
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
    pub fn reshaped(self, dims: Vec<usize>) -> Option<Tensor> {
        Tensor::new(dims, self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `zeros` used `vec![0.0; n]`, which aborts the process (with a backtrace)
    /// when the allocation fails; sizes that fit `usize` but not in memory must give `None`.
    #[test]
    fn zeros_too_large_to_allocate_is_none_not_an_abort() {
        // 2^50 elements = 4 PiB: fits usize and isize, exceeds any address space.
        assert!(Tensor::zeros(vec![1 << 30, 1 << 20]).is_none());
        // Overflowing byte count.
        assert!(Tensor::zeros(vec![usize::MAX / 2, 1]).is_none());
        assert!(Tensor::zeros(vec![usize::MAX, 2]).is_none());
        assert_eq!(Tensor::zeros(vec![2, 3]).unwrap().data(), &[0.0; 6]);
    }
}
