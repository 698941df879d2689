//! Darknet-53, YOLOv3's backbone: conv + batch norm + LeakyReLU(0.1) units, five
//! stride-2 stages with 1, 2, 8, 8 and 4 residual blocks, then a regression
//! head (global average pool, optional dropout, linear).

use dfdx::prelude::*;

use super::resnet::Head;
use super::{Geometry, ModelSpec};
use crate::models::layers::{GreyTo, LeakyRelu01, RtLinear};

/// Conv, batch norm, leaky ReLU.
type Unit<const I: usize, const O: usize, const K: usize, const S: usize, const P: usize> =
    (Conv2D<I, O, K, S, P>, BatchNorm2D<O>, LeakyRelu01);

/// 1x1 down to `H` channels, 3x3 back up to `C`, plus the input.
type Block<const C: usize, const H: usize> = Residual<(Unit<C, H, 1, 1, 0>, Unit<H, C, 3, 1, 1>)>;

type Body<const C: usize> = (
    (
        GreyTo<C>,
        Unit<C, 32, 3, 1, 1>,
        Unit<32, 64, 3, 2, 1>,
        Block<64, 32>,
    ),
    (Unit<64, 128, 3, 2, 1>, Repeated<Block<128, 64>, 2>),
    (Unit<128, 256, 3, 2, 1>, Repeated<Block<256, 128>, 8>),
    (Unit<256, 512, 3, 2, 1>, Repeated<Block<512, 256>, 8>),
    (Unit<512, 1024, 3, 2, 1>, Repeated<Block<1024, 512>, 4>),
    AvgPoolGlobal,
);

pub type Darknet53<const C: usize, D> = (<Body<C> as BuildOnDevice<D, f32>>::Built, Head<D>);

pub const GEOMETRY: Geometry = Geometry {
    layers: &[(3, 2, 1), (3, 2, 1), (3, 2, 1), (3, 2, 1), (3, 2, 1)],
    channels_out: 1024,
};

pub fn build<const C: usize, D: Device<f32> + DeviceBuildExt>(
    dev: &D,
    spec: &ModelSpec,
) -> Result<Darknet53<C, D>, D::Err> {
    let p = spec.dropout.unwrap_or(0.0) as f32;
    Ok((
        dev.try_build_module::<Body<C>, f32>()?,
        (Dropout { p }, RtLinear::new(dev, 1024, spec.outputs)?),
    ))
}
