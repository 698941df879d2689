//! The built-in architectures, written as graphs in the same TOML a pipeline's
//! `[model]` uses. `arch = "resnet50"` means the `[model]` table of
//! `resnet50.toml`, with the pipeline's own keys laid over it.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{SourceFile, Table};

crate::config_choice! {
    /// The presets of `[model] arch`.
    pub enum Arch {
        LeNet = "lenet",
        AlexNet = "alexnet",
        ResNet18 = "resnet18",
        ResNet34 = "resnet34",
        ResNet50 = "resnet50",
        Darknet53 = "darknet53",
    }
}

impl Arch {
    pub(crate) fn text(self) -> &'static str {
        match self {
            Arch::LeNet => include_str!("lenet.toml"),
            Arch::AlexNet => include_str!("alexnet.toml"),
            Arch::ResNet18 => include_str!("resnet18.toml"),
            Arch::ResNet34 => include_str!("resnet34.toml"),
            Arch::ResNet50 => include_str!("resnet50.toml"),
            Arch::Darknet53 => include_str!("darknet53.toml"),
        }
    }

    /// The preset as a `[model]` table. Its errors point at
    /// `src/models/presets/<name>.toml`, where it is written.
    pub fn table(self) -> Table {
        let path = PathBuf::from(format!("src/models/presets/{}.toml", self.name()));
        let file = Arc::new(SourceFile::new(path, self.text().to_string()));
        // The presets are tested to parse (every_preset_parses_and_counts_right).
        let document = toml_edit::Document::parse(self.text().to_string()).expect("a preset is valid TOML");
        Table::from_document(&file, document.as_table())
    }
}

impl Arch {
    /// The preset as a graph, as `arch = "<name>"` alone reads it (the presets
    /// are tested to read without errors).
    pub fn graph(self, channels: usize) -> crate::models::Network {
        let table = self.table();
        let blocks = match table.get("blocks").map(|e| &e.node.value) {
            Some(crate::config::Value::Table(t)) => Some(t),
            _ => None,
        };
        let mut reader = crate::models::graph::read::GraphReader::new(blocks);
        let graph = reader.graph(
            self.name().to_string(),
            channels,
            &table.get("layers").expect("a preset has layers").node,
            table.get("head").map(|e| &e.node),
        );
        let errors: Vec<String> = reader.finish().iter().map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:#?}");
        graph
    }
}
