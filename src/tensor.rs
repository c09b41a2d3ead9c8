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

    /// A tensor of zeros; `None` if the element count overflows.
    pub fn zeros(dims: Vec<usize>) -> Option<Tensor> {
        let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        Some(Tensor {
            dims,
            data: vec![0.0; n],
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
    pub fn reshaped(self, dims: Vec<usize>) -> Option<Tensor> {
        Tensor::new(dims, self.data)
    }
}
