//! Networks as data: the normal form of `[model]`, which one builder turns into
//! a dfdx network ([`crate::models::net`]), `fkp model` prints, and the train
//! stage's cache key records.
//!
//! [`read`] turns the TOML (a preset, a pipeline's own layers, or both) into a
//! [`Network`]: block uses expanded, parameters substituted, defaults filled in.
//! [`shape`] follows an image through it, checking every layer and counting
//! parameters and multiply-adds. What each layer kind is lives in
//! [`super::kinds`].

pub mod read;
pub mod shape;

use serde::{Deserialize, Serialize};

pub use super::kinds::Op;
use crate::config::Location;

/// A whole network: `layers`, then `head`, then the output layer, a dense layer
/// as wide as the data has coordinates (none after a final `soft_argmax`).
/// Images enter as one grey channel, repeated to `channels`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    /// The preset it came from (`resnet18`), with ` (modified)` when the pipeline
    /// changed it, or `custom`.
    pub name: String,
    pub channels: usize,
    pub layers: Vec<Layer>,
    pub head: Vec<Layer>,
    /// Where `layers` is written, for errors about the network as a whole.
    #[serde(skip)]
    pub at: Option<Location>,
}

impl Network {
    /// The stand-in for a `[model]` with errors: never built.
    pub fn empty(channels: usize) -> Network {
        Network {
            name: "custom".into(),
            channels,
            layers: Vec::new(),
            head: Vec::new(),
            at: None,
        }
    }

    /// Whether the network ends in `soft_argmax`, which gives the coordinates
    /// itself: then it has no output layer.
    pub fn reads_coordinates(&self) -> bool {
        let last = self.head.last().or(self.layers.last());
        matches!(last.map(|l| &l.op), Some(Op::SoftArgmax { .. }))
    }

    /// The last layer written, for errors about the network's end.
    pub fn last_written(&self) -> Option<Location> {
        self.head
            .last()
            .or(self.layers.last())
            .and_then(|l| l.at.clone())
            .or(self.at.clone())
    }

    /// The network as the train stage's cache key holds it: its layers and
    /// settings, without the names of the network and its blocks, which change
    /// nothing it computes (a preset's layers written out by hand reuse its entry).
    pub fn key(&self) -> serde_json::Value {
        fn strip(value: &mut serde_json::Value) {
            match value {
                serde_json::Value::Object(map) => {
                    if map.get("kind").and_then(|k| k.as_str()) == Some("block") {
                        map.remove("name");
                    }
                    map.values_mut().for_each(strip);
                }
                serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
                _ => {}
            }
        }
        let mut key = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = key.as_object_mut() {
            map.remove("name");
        }
        strip(&mut key);
        key
    }
}

/// One layer and, when it was read from a file, where it is written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Layer {
    #[serde(flatten)]
    pub op: Op,
    #[serde(skip)]
    pub at: Option<Location>,
}

impl PartialEq for Layer {
    fn eq(&self, other: &Self) -> bool {
        self.op == other.op
    }
}

impl PartialEq for Network {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.channels, &self.layers, &self.head)
            == (&other.name, other.channels, &other.layers, &other.head)
    }
}

/// One use of a block: its layers with the parameters filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockUse {
    pub body: Vec<Layer>,
    pub shortcut: Shortcut,
    /// Layers after the residual sum (ResNet's last ReLU).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after_add: Vec<Layer>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Shortcut {
    /// A plain sequence of layers.
    None,
    /// The block's input is added to its output.
    Identity,
    /// The input goes through these layers (ResNet's 1x1 conv and batch norm)
    /// before the sum, because the body changes its shape.
    Projection { layers: Vec<Layer> },
}
