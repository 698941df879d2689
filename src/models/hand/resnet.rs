//! ResNet-18 and -34 (basic blocks) and ResNet-50 (bottleneck blocks), laid out
//! as torchvision's, with a regression head: global average pool, optional
//! dropout, and a linear layer to the keypoint coordinates.

use dfdx::prelude::*;

use super::{Geometry, ModelSpec};
use crate::models::layers::{GreyTo, RtLinear};

type Stem<const C: usize> = (
    GreyTo<C>,
    Conv2D<C, 64, 7, 2, 3>,
    BatchNorm2D<64>,
    ReLU,
    MaxPool2D<3, 2, 1>,
);

type Basic<const C: usize> = Residual<(
    Conv2D<C, C, 3, 1, 1>,
    BatchNorm2D<C>,
    ReLU,
    Conv2D<C, C, 3, 1, 1>,
    BatchNorm2D<C>,
)>;

type BasicDown<const C: usize, const O: usize> = GeneralizedResidual<
    (
        Conv2D<C, O, 3, 2, 1>,
        BatchNorm2D<O>,
        ReLU,
        Conv2D<O, O, 3, 1, 1>,
        BatchNorm2D<O>,
    ),
    (Conv2D<C, O, 1, 2, 0>, BatchNorm2D<O>),
>;

/// 1x1 reduce to `M`, 3x3, 1x1 expand back to `C`.
type Bottleneck<const C: usize, const M: usize> = Residual<(
    (Conv2D<C, M, 1>, BatchNorm2D<M>, ReLU),
    (Conv2D<M, M, 3, 1, 1>, BatchNorm2D<M>, ReLU),
    (Conv2D<M, C, 1>, BatchNorm2D<C>),
)>;

/// The first bottleneck of a stage: stride `S` on the 3x3 (torchvision's v1.5)
/// and a projection shortcut from `C` to `O` channels.
type BottleneckDown<const C: usize, const M: usize, const O: usize, const S: usize> = GeneralizedResidual<
    (
        (Conv2D<C, M, 1>, BatchNorm2D<M>, ReLU),
        (Conv2D<M, M, 3, S, 1>, BatchNorm2D<M>, ReLU),
        (Conv2D<M, O, 1>, BatchNorm2D<O>),
    ),
    (Conv2D<C, O, 1, S, 0>, BatchNorm2D<O>),
>;

type Body18<const C: usize> = (
    Stem<C>,
    Repeated<(Basic<64>, ReLU), 2>,
    (BasicDown<64, 128>, ReLU, Basic<128>, ReLU),
    (BasicDown<128, 256>, ReLU, Basic<256>, ReLU),
    (BasicDown<256, 512>, ReLU, Basic<512>, ReLU),
    AvgPoolGlobal,
);

type Body34<const C: usize> = (
    Stem<C>,
    Repeated<(Basic<64>, ReLU), 3>,
    (BasicDown<64, 128>, ReLU, Repeated<(Basic<128>, ReLU), 3>),
    (BasicDown<128, 256>, ReLU, Repeated<(Basic<256>, ReLU), 5>),
    (BasicDown<256, 512>, ReLU, Repeated<(Basic<512>, ReLU), 2>),
    AvgPoolGlobal,
);

type Body50<const C: usize> = (
    Stem<C>,
    (
        BottleneckDown<64, 64, 256, 1>,
        ReLU,
        Repeated<(Bottleneck<256, 64>, ReLU), 2>,
    ),
    (
        BottleneckDown<256, 128, 512, 2>,
        ReLU,
        Repeated<(Bottleneck<512, 128>, ReLU), 3>,
    ),
    (
        BottleneckDown<512, 256, 1024, 2>,
        ReLU,
        Repeated<(Bottleneck<1024, 256>, ReLU), 5>,
    ),
    (
        BottleneckDown<1024, 512, 2048, 2>,
        ReLU,
        Repeated<(Bottleneck<2048, 512>, ReLU), 2>,
    ),
    AvgPoolGlobal,
);

pub type Head<D> = (Dropout, RtLinear<f32, D>);

pub type ResNet18<const C: usize, D> = (<Body18<C> as BuildOnDevice<D, f32>>::Built, Head<D>);
pub type ResNet34<const C: usize, D> = (<Body34<C> as BuildOnDevice<D, f32>>::Built, Head<D>);
pub type ResNet50<const C: usize, D> = (<Body50<C> as BuildOnDevice<D, f32>>::Built, Head<D>);

/// Stem and four stages halve the side five times; any side of at least 32 works.
pub const GEOMETRY: Geometry = Geometry {
    layers: &[(7, 2, 3), (3, 2, 1), (3, 2, 1), (3, 2, 1), (3, 2, 1)],
    channels_out: 512,
};

fn head<D: Device<f32>>(dev: &D, spec: &ModelSpec, width: usize) -> Result<Head<D>, D::Err> {
    let p = spec.dropout.unwrap_or(0.0) as f32;
    Ok((Dropout { p }, RtLinear::new(dev, width, spec.outputs)?))
}

pub fn build18<const C: usize, D: Device<f32> + DeviceBuildExt>(
    dev: &D,
    spec: &ModelSpec,
) -> Result<ResNet18<C, D>, D::Err> {
    Ok((dev.try_build_module::<Body18<C>, f32>()?, head(dev, spec, 512)?))
}

pub fn build34<const C: usize, D: Device<f32> + DeviceBuildExt>(
    dev: &D,
    spec: &ModelSpec,
) -> Result<ResNet34<C, D>, D::Err> {
    Ok((dev.try_build_module::<Body34<C>, f32>()?, head(dev, spec, 512)?))
}

pub fn build50<const C: usize, D: Device<f32> + DeviceBuildExt>(
    dev: &D,
    spec: &ModelSpec,
) -> Result<ResNet50<C, D>, D::Err> {
    Ok((dev.try_build_module::<Body50<C>, f32>()?, head(dev, spec, 2048)?))
}
