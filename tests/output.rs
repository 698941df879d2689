//! What fkp says at the terminal: one line per stage and a closing summary by
//! default, the tables with `-v`; `fkp status` short, and with `-v` its paths;
//! changed keys named as the file writes them, `layers[2]` before `layers[10]`.

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

/// Lines of a table (comfy-table's borders).
fn is_table(line: &str) -> bool {
    line.starts_with(['┌', '│', '╞', '├', '└'])
}

#[test]
fn a_run_says_one_line_per_stage_and_a_closing_summary_and_tables_only_with_v() {
    let s = workspace(2);
    let out = s.fkp(&["run", "p.toml"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        !stdout.lines().chain(stderr.lines()).any(is_table),
        "{stdout}{stderr}"
    );
    // The header, `running` and `done` for each of 5 stages, the network and 2 epochs.
    assert_eq!(stderr.lines().count(), 1 + 2 * 5 + 1 + 2, "{stderr}");
    for headline in [
        "ingest     done     in ",
        ": 120 rows (",
        "eda        done     in ",
        "missing-label pattern",
        ": 96 training and 24 validation rows; missing labels masked (",
        "train      done     in ",
        ": 2 epochs, val RMSE ",
        "evaluate   done     in ",
    ] {
        assert!(stderr.contains(headline), "{headline:?} in\n{stderr}");
    }
    // One closing line: what ran, the evaluation's headline, where the reports are.
    let closing: Vec<&str> = stdout.lines().collect();
    assert_eq!(closing.len(), 1, "{stdout}");
    assert!(
        closing[0].starts_with("p: 5 built; val RMSE ")
            && closing[0].contains(" px, PCK@10% ")
            && closing[0].ends_with("; reports in reports/p/"),
        "{stdout}"
    );
    let evaluated = stderr
        .lines()
        .find(|l| l.starts_with("  evaluate   done"))
        .and_then(|l| l.split_once("s: "))
        .map(|(_, headline)| headline.to_string())
        .unwrap();
    assert!(closing[0].contains(&evaluated), "{evaluated} in {stdout}");

    // Cached: each stage's line keeps its headline, and the summary says so.
    let out = s.fkp(&["run", "p.toml"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(stderr.lines().count(), 1 + 5, "{stderr}");
    assert!(
        stderr.contains("evaluate   cached   ") && stderr.contains(&evaluated),
        "{stderr}"
    );
    assert!(stdout.starts_with("p: 5 cached; val RMSE "), "{stdout}");

    // -v: every stage's tables too, on stdout.
    let out = s.fkp(&["run", "p.toml", "--force", "-v"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().filter(|l| is_table(l)).count() > 20, "{stdout}");
    for table in [
        "most common missing-label patterns",
        "mean-shape RMSE px",
        "complete rows",
    ] {
        assert!(stdout.contains(table), "{table:?} in\n{stdout}");
    }
}

#[test]
fn status_shows_state_key_and_reason_and_its_paths_with_v() {
    let s = workspace(1);
    s.ok(&["run", "p.toml", "--until", "prepare"]);
    let out = s.fkp(&["status", "p.toml"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + 5, "{text}");
    assert_eq!(lines[0], "p (p.toml)");
    assert!(
        lines[1].starts_with("  ingest     cached   ") && lines[1].len() == 2 + 10 + 1 + 8 + 1 + 12,
        "{text}"
    );
    assert!(
        lines[4].starts_with("  train      missing  ") && lines[4].ends_with("  never built"),
        "{text}"
    );
    assert!(lines[5].starts_with("  evaluate   missing  ?   "), "{text}");
    assert!(!text.contains(".fkp"), "{text}");

    let out = s.fkp(&["status", "p.toml", "-v"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let ingest = s.entries("ingest");
    let entry = ingest[0].strip_prefix(s.dir.path()).unwrap();
    assert!(
        text.contains(&format!("              entry {}\n", entry.display()))
            && text.contains(&format!(
                "              {}\n",
                entry.join("data/train.parquet").display()
            )),
        "{text}"
    );
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
