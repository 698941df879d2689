//! Networks as graphs, end to end: `fkp model`, custom `[model]` layers that
//! train, errors that name the line, and a cache key that follows the network,
//! not its text.

use crate::common::*;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn state(s: &Scratch, stage: &str) -> String {
    let status = s.status_json(&["p.toml"]);
    status["pipelines"][0]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["stage"] == stage)
        .map(|st| st["state"].as_str().unwrap().to_string())
        .unwrap()
}

#[test]
fn fkp_model_summarises_a_preset_from_model_side_without_any_data() {
    let s = Scratch::new();
    s.write(
        "p.toml",
        "[ingest]\ntrain = \"not-there-yet.csv\"\n[prepare]\n[model]\narch = \"lenet\"\nside = 96\n[train]\n",
    );
    let out = s.fkp(&["model", "p.toml"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("lenet network of pipeline `p`, for 96x96 images and 30 outputs"),
        "{text}"
    );
    assert!(
        text.contains("parameters: 8,051,502 (32.2 MB of f32 weights)"),
        "{text}"
    );
    for row in [
        "layers.0",
        "conv 32 3x3",
        "32x94x94",
        "maxpool 2",
        "32x47x47",
        "output",
        "dense 30",
    ] {
        assert!(text.contains(row), "{row} not in:\n{text}");
    }

    s.write(
        "p.toml",
        "[ingest]\ntrain = \"x.csv\"\n[prepare]\n[model]\narch = \"resnet18\"\nside = 64\n[train]\n",
    );
    let dot = stdout(&s.fkp(&["model", "--dot", "p.toml"]));
    assert!(dot.starts_with("digraph model {"), "{dot}");
    assert!(
        dot.contains("subgraph cluster_0") && dot.contains("label=\"basic layers.4.0\""),
        "{dot}"
    );
    assert!(
        dot.contains("\"layers.5.0.projection.1\" -> \"layers.5.0.add\""),
        "{dot}"
    );
    assert!(dot.contains("11,185,630 parameters"), "{dot}");
}

#[test]
fn fkp_model_takes_the_side_from_the_ingested_data() {
    let s = Scratch::new();
    s.write("faces.csv", blob_csv(20, 32, 1));
    s.write(
        "p.toml",
        "[ingest]\ntrain = \"faces.csv\"\n[prepare]\n[model]\narch = \"lenet\"\n[train]\n",
    );
    let (code, err) = s.fails(&["model", "p.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("run `fkp run --until ingest p.toml` first, or set `side` in [model]"),
        "{err}"
    );
    s.ok(&["run", "--until", "ingest", "p.toml"]);
    let text = stdout(&s.fkp(&["model", "p.toml"]));
    assert!(
        text.contains("for 32x32 images and 4 outputs (the ingested data)"),
        "{text}"
    );
    assert!(text.contains("128x3x3"), "{text}");
}

const CUSTOM: &str = r#"[ingest]
train = "faces.csv"
[prepare]
missing = "mask"
[model]
# a small residual network
layers = [
  { conv = 8, kernel = 3, padding = 1 }, "batchnorm", "relu", { maxpool = 2 },
  { block = "res", filters = 16, stride = 2 },
  "global_avg_pool",
]
head = [{ dense = 16 }, "relu"]
[model.blocks.res]
defaults = { stride = 1 }
layers = [{ conv = "filters", kernel = 3, stride = "stride", padding = 1 }, "batchnorm", "relu"]
residual = true
projection = [{ conv = "filters", kernel = 1, stride = "stride" }]
[train]
device = "cpu"
epochs = 1
batch_size = 8
[evaluate]
"#;

#[test]
fn a_custom_network_trains_and_its_key_is_the_graph_not_the_text() {
    let s = Scratch::new();
    s.write("faces.csv", blob_csv(24, 32, 2));
    s.write("p.toml", CUSTOM);
    let err = s.ok(&["run", "p.toml"]);
    assert!(err.contains("custom on cpu:"), "{err}");
    assert_eq!(state(&s, "evaluate"), "cached");

    // Comments, spacing and key order change nothing.
    s.write(
        "p.toml",
        CUSTOM
            .replace("# a small residual network", "# reformatted\n# twice")
            .replace(
                "{ conv = 8, kernel = 3, padding = 1 }",
                "{ padding = 1,   kernel = 3, conv = 8 }",
            ),
    );
    assert_eq!(state(&s, "train"), "cached");
    // Writing out a default changes nothing either; a real change retrains.
    s.write(
        "p.toml",
        CUSTOM.replace("{ maxpool = 2 }", "{ maxpool = 2, stride = 2 }"),
    );
    assert_eq!(state(&s, "train"), "cached");
    s.write("p.toml", CUSTOM.replace("{ dense = 16 }", "{ dense = 24 }"));
    assert_eq!(state(&s, "train"), "stale");
}

#[test]
fn a_network_that_cannot_work_is_refused_before_anything_runs() {
    let s = Scratch::new();
    s.write("faces.csv", blob_csv(20, 32, 1));
    let pipeline = "[ingest]\ntrain = \"faces.csv\"\n[prepare]\n[model]\nside = 32\nlayers = [\n  \
                    { conv = 8, kernel = 3 }, { maxpool = 2 },\n  { maxpool = 2 }, { maxpool = 2 },\n  \
                    { maxpool = 2 }, { maxpool = 2 }, \"flatten\",\n]\n[train]\ndevice = \"cpu\"\n";
    s.write("p.toml", pipeline);
    let (code, err) = s.fails(&["run", "p.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("layers.5 (maxpool 2) gets a 1x1 map from a 32x32 input, smaller than its 2x2 window: too many poolings"),
        "{err}"
    );
    assert!(err.contains("p.toml:9:20"), "{err}");
    assert!(s.entries("ingest").is_empty(), "nothing ran");

    // Without `side`, the same check runs when training starts, still naming the line.
    s.write("p.toml", pipeline.replace("side = 32\n", ""));
    let (_, err) = s.fails(&["run", "p.toml"]);
    assert!(
        err.contains("too many poolings") && err.contains("p.toml:8:20"),
        "{err}"
    );
}

#[test]
fn a_preset_can_be_extended_in_a_pipeline() {
    let s = Scratch::new();
    s.write(
        "p.toml",
        "[ingest]\ntrain = \"x.csv\"\n[prepare]\n[model]\narch = \"lenet\"\nside = 96\n\
         head = [{ dense = 1000 }, \"relu\", { dropout = 0.2 }]\ndropout = 0.4\n[train]\n",
    );
    let text = stdout(&s.fkp(&["model", "p.toml"]));
    assert!(text.starts_with("lenet (modified) network"), "{text}");
    assert!(
        text.contains("head.0") && text.contains("dense 1000") && text.contains("dropout 0.4"),
        "{text}"
    );
    assert!(!text.contains("dense 500"), "{text}");
    // The preset's blocks merge with the pipeline's, key by key.
    s.write(
        "p.toml",
        "[ingest]\ntrain = \"x.csv\"\n[prepare]\n[model]\narch = \"resnet18\"\nside = 64\n\
         [model.blocks.basic]\nafter_add = [{ leaky_relu = 0.1 }]\n[train]\n",
    );
    let text = stdout(&s.fkp(&["model", "p.toml"]));
    assert!(
        text.contains("leaky_relu 0.1") && text.contains("11,185,630"),
        "{text}"
    );
    // `dropout` with a head that has none is an error, as is a [model] with no network.
    s.write(
        "p.toml",
        "[ingest]\ntrain = \"x.csv\"\n[prepare]\n[model]\nlayers = [\"flatten\"]\ndropout = 0.3\n[train]\n",
    );
    let (code, err) = s.fails(&["model", "p.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("this network's head has none"), "{err}");
    s.write(
        "p.toml",
        "[ingest]\ntrain = \"x.csv\"\n[prepare]\n[model]\nchannels = 1\n[train]\n",
    );
    let (_, err) = s.fails(&["model", "p.toml"]);
    assert!(err.contains("missing required key `arch` in [model]"), "{err}");
}

#[test]
fn blocks_from_elsewhere_may_go_unused_but_a_written_override_may_not() {
    let s = Scratch::new();
    s.write(
        "base.toml",
        "[ingest]\ntrain = \"x.csv\"\n[prepare]\n[model]\nside = 32\nlayers = [{ block = \"s\", f = 8 }, \"global_avg_pool\"]\n\
         [model.blocks.s]\nlayers = [{ conv = \"f\", kernel = 3 }]\n[train]\n",
    );
    s.write(
        "p.toml",
        "[pipeline]\nextends = \"base.toml\"\n[model]\nlayers = [{ conv = 4, kernel = 3 }, \"global_avg_pool\"]\n",
    );
    let out = s.fkp(&["model", "p.toml"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // An override the pipeline writes of a block its layers do not use is a mistake.
    s.write(
        "p.toml",
        "[ingest]\ntrain = \"x.csv\"\n[prepare]\n[model]\narch = \"resnet18\"\nside = 64\n\
         layers = [{ conv = 8, kernel = 3 }, \"global_avg_pool\"]\n[model.blocks.basic]\nafter_add = [\"leaky_relu\"]\n[train]\n",
    );
    let (code, err) = s.fails(&["model", "p.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("block \"basic\" is defined but never used"), "{err}");
    // A use with a bad `repeat` still counts as a use.
    s.write(
        "p.toml",
        "[ingest]\ntrain = \"x.csv\"\n[prepare]\n[model]\nlayers = [{ block = \"a\", repeat = 0 }, \"flatten\"]\n\
         [model.blocks.a]\nlayers = [\"relu\"]\n[train]\n",
    );
    let (_, err) = s.fails(&["model", "p.toml"]);
    assert!(
        err.contains("repeat 0 is outside 1..=256") && !err.contains("never used"),
        "{err}"
    );
}

#[test]
fn batch_norm_over_a_single_value_per_channel_is_refused() {
    // After `flatten`, batch norm sees one value per channel per image: a batch
    // of one image (here the last of each epoch: 16 training faces in batches of
    // 15) would give it a NaN variance and teach the layers before it nothing.
    let s = Scratch::new();
    s.write("faces.csv", blob_csv(20, 32, 2));
    let pipeline = "[ingest]\ntrain = \"faces.csv\"\n[prepare]\n[model]\nside = 32\nlayers = [\n  \
                    { conv = 4, kernel = 3 }, { maxpool = 4 }, \"flatten\", { dense = 8 }, \"batchnorm\", \"relu\",\n]\n\
                    [train]\ndevice = \"cpu\"\nepochs = 1\nbatch_size = 15\n";
    s.write("p.toml", pipeline);
    let (code, err) = s.fails(&["run", "p.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "layers.4 (batchnorm) gets 1 value(s) per channel from each image, and a batch of 1 image(s)"
        ) && err.contains("in batches of 15"),
        "{err}"
    );
    assert!(s.entries("train").is_empty(), "nothing cached");
    // Batches of two images or more are fine.
    s.write("p.toml", pipeline.replace("batch_size = 15", "batch_size = 8"));
    s.ok(&["run", "p.toml"]);
}
