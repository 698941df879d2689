//! AlexNet with batch normalisation: five conv layers (11x11/64 stride 4,
//! 5x5/192, 3x3/384, 3x3/256, 3x3/256) with 3x3 stride-2 max-pools, then dense
//! 4096-4096 with dropout 0.5, and the output.

use dfdx::prelude::*;

use super::{Geometry, ModelSpec};
use crate::models::layers::{GreyTo, RtFlatten, RtLinear};

type FeaturesOf<const C: usize> = (
    GreyTo<C>,
    (Conv2D<C, 64, 11, 4, 2>, BatchNorm2D<64>, ReLU, MaxPool2D<3, 2>),
    (Conv2D<64, 192, 5, 1, 2>, BatchNorm2D<192>, ReLU, MaxPool2D<3, 2>),
    (Conv2D<192, 384, 3, 1, 1>, BatchNorm2D<384>, ReLU),
    (Conv2D<384, 256, 3, 1, 1>, BatchNorm2D<256>, ReLU),
    (Conv2D<256, 256, 3, 1, 1>, BatchNorm2D<256>, ReLU, MaxPool2D<3, 2>),
);

pub type AlexNet<const C: usize, D> = (
    <FeaturesOf<C> as BuildOnDevice<D, f32>>::Built,
    (RtFlatten, Dropout, RtLinear<f32, D>, ReLU),
    (Dropout, RtLinear<f32, D>, ReLU, RtLinear<f32, D>),
);

pub const GEOMETRY: Geometry = Geometry {
    layers: &[
        (11, 4, 2),
        (3, 2, 0),
        (5, 1, 2),
        (3, 2, 0),
        (3, 1, 1),
        (3, 1, 1),
        (3, 1, 1),
        (3, 2, 0),
    ],
    channels_out: 256,
};

pub fn build<const C: usize, D: Device<f32> + DeviceBuildExt>(
    dev: &D,
    spec: &ModelSpec,
) -> Result<AlexNet<C, D>, D::Err> {
    let features = dev.try_build_module::<FeaturesOf<C>, f32>()?;
    let p = spec.dropout.unwrap_or(0.5) as f32;
    let flat = GEOMETRY.flat_width(spec.side);
    let dense = (RtFlatten, Dropout { p }, RtLinear::new(dev, flat, 4096)?, ReLU);
    let output = (
        Dropout { p },
        RtLinear::new(dev, 4096, 4096)?,
        ReLU,
        RtLinear::new(dev, 4096, spec.outputs)?,
    );
    Ok((features, dense, output))
}
