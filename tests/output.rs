//! What fkp says at the terminal: changed keys named as the file writes
//! them, `layers[2]` before `layers[10]`.

mod common;

use common::{Scratch, blob_csv};

/// Every stage, LeNet trained for `epochs` epochs on small faces.
fn workspace(epochs: usize) -> Scratch {
    let s = Scratch::new();
    s.write("faces.csv", blob_csv(120, 24, 5));
    s.write(
        "p.toml",
        format!(
            "[ingest]\ntrain = \"faces.csv\"\n[eda]\nsamples = 2\n[prepare]\nmissing = \"mask\"\n\
             [model]\narch = \"lenet\"\n\
             [train]\ndevice = \"cpu\"\nepochs = {epochs}\nbatch_size = 16\n\
             [evaluate]\nsamples = 2\n"
        ),
    );
    s
}

#[test]
fn status_names_changed_keys_as_written_and_counts_layers_in_order() {
    let s = workspace(3);
    let net = |second: usize, eleventh: usize| {
        format!(
            "[model]\nlayers = [\n  {{ conv = 4, kernel = 3, padding = 1 }}, \"relu\",\n  \
             {{ conv = {second}, kernel = 3, padding = 1 }}, \"relu\",\n  \
             {{ conv = 4, kernel = 3, padding = 1 }}, \"relu\", {{ conv = 4, kernel = 3, padding = 1 }}, \"relu\",\n  \
             {{ conv = 4, kernel = 3, padding = 1 }}, \"relu\",\n  \
             {{ conv = {eleventh}, kernel = 3, padding = 1 }}, \"relu\", {{ maxpool = 4 }}, \"flatten\",\n]\n"
        )
    };
    let write = |second, eleventh, warmup| {
        s.write(
            "p.toml",
            format!(
                "[ingest]\ntrain = \"faces.csv\"\n[prepare]\nmissing = \"mask\"\n{}\
                 [train]\ndevice = \"cpu\"\nepochs = 3\nbatch_size = 16\n\
                 [train.schedule]\nkind = \"cosine\"\nwarmup_epochs = {warmup}\n",
                net(second, eleventh)
            ),
        )
    };
    write(4, 4, 1);
    s.ok(&["run", "p.toml"]);
    write(5, 6, 2);
    let out = s.fkp(&["status", "p.toml"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let train = text.lines().find(|l| l.starts_with("  train ")).unwrap();
    assert!(
        train.contains("stale")
            && train.ends_with(
                "  `[model] layers[2].filters` changed: 4 -> 5; `[model] layers[10].filters` changed: 4 -> 6; \
                 `[train.schedule] warmup_epochs` changed: 1.0 -> 2.0"
            ),
        "{text}"
    );
    // The JSON keeps its keys as documented.
    let json = s.status_json(&["p.toml"]);
    let keys: Vec<&str> = json["pipelines"][0]["stages"][2]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "train.model.graph.layers[2].filters",
            "train.model.graph.layers[10].filters",
            "train.warmup_epochs"
        ]
    );
    // A run says the same.
    let err = s.ok(&["run", "p.toml", "--dry-run"]);
    assert!(
        err.contains("`[model] layers[2].filters` changed: 4 -> 5; `[model] layers[10]"),
        "{err}"
    );
}
