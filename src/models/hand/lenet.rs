//! The LeNet-style network of Kaggle's facial-keypoints tutorials: three conv
//! blocks (3x3/32, 2x2/64, 2x2/128; ReLU, 2x2 max-pool, dropout 0.1/0.2/0.3),
//! then dense 500 (dropout) and 500, and the output.

use dfdx::prelude::*;

use super::{Geometry, ModelSpec};
use crate::models::layers::{GreyTo, RtFlatten, RtLinear};

type FeaturesOf<const C: usize> = (
    GreyTo<C>,
    (Conv2D<C, 32, 3>, Bias2D<32>, ReLU, MaxPool2D<2, 2>, Dropout),
    (Conv2D<32, 64, 2>, Bias2D<64>, ReLU, MaxPool2D<2, 2>, Dropout),
    (Conv2D<64, 128, 2>, Bias2D<128>, ReLU, MaxPool2D<2, 2>, Dropout),
);

pub type LeNet<const C: usize, D> = (
    <FeaturesOf<C> as BuildOnDevice<D, f32>>::Built,
    (RtFlatten, RtLinear<f32, D>, ReLU, Dropout),
    (RtLinear<f32, D>, ReLU, RtLinear<f32, D>),
);

pub const GEOMETRY: Geometry = Geometry {
    // (kernel, stride, padding) of every layer that changes the side.
    layers: &[(3, 1, 0), (2, 2, 0), (2, 1, 0), (2, 2, 0), (2, 1, 0), (2, 2, 0)],
    channels_out: 128,
};

pub fn build<const C: usize, D: Device<f32> + DeviceBuildExt>(
    dev: &D,
    spec: &ModelSpec,
) -> Result<LeNet<C, D>, D::Err> {
    let mut features = dev.try_build_module::<FeaturesOf<C>, f32>()?;
    features.1.4.p = 0.1;
    features.2.4.p = 0.2;
    features.3.4.p = 0.3;
    let flat = GEOMETRY.flat_width(spec.side);
    let dense = (
        RtFlatten,
        RtLinear::new(dev, flat, 500)?,
        ReLU,
        Dropout {
            p: spec.dropout.unwrap_or(0.5) as f32,
        },
    );
    let output = (
        RtLinear::new(dev, 500, 500)?,
        ReLU,
        RtLinear::new(dev, 500, spec.outputs)?,
    );
    Ok((features, dense, output))
}
