//! What fkp says at the terminal: one line per stage and a closing summary by
//! default, the tables with `-v`; `fkp status` short, and with `-v` its paths;
//! a training stopped midway shown as partial; what an interrupted run kept;
//! `--set` mistakes quoting the argument; changed keys named as the file
//! writes them, `layers[2]` before `layers[10]`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use crate::common::{Scratch, blob_csv};

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

/// Waits for a line of `lines` containing `text`; every line read, in order.
fn read_until(lines: &std::sync::mpsc::Receiver<String>, text: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no line with {text:?}:\n{}", seen.join("\n")));
        seen.push(line.clone());
        if line.contains(text) {
            return;
        }
    }
}

/// Runs fkp with `args`, sends it SIGINT once a stderr line holds `text`, and
/// returns its exit code and every stderr line.
fn interrupt_at(s: &Scratch, args: &[&str], text: &str) -> (Option<i32>, Vec<String>) {
    signal_at(s, args, text, "INT")
}

/// Runs fkp with `args`, sends it `signal` (`kill -SIGNAL`) once a stderr line
/// holds `text`, and returns its exit code and every stderr line.
fn signal_at(s: &Scratch, args: &[&str], text: &str, signal: &str) -> (Option<i32>, Vec<String>) {
    let mut child = s
        .command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (sender, lines) = channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    read_until(&lines, text, &mut seen);
    let kill = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    seen.extend(lines.iter());
    (status.code(), seen)
}

/// SIGTERM and SIGHUP stop a run as Ctrl-C does, each with its own status.
#[test]
fn sigterm_and_sighup_stop_a_run_safely_with_143_and_129() {
    for (signal, code, name) in [("TERM", 143, "SIGTERM"), ("HUP", 129, "SIGHUP")] {
        let s = workspace(1000);
        let (status, seen) = signal_at(&s, &["run", "p.toml"], "epoch   2/1000", signal);
        let text = seen.join("\n");
        assert_eq!(status, Some(code), "{text}");
        assert!(
            text.contains(&format!("interrupted by {name}: nothing half-written is left")),
            "{text}"
        );
    }
}

#[test]
fn ctrl_c_says_what_it_kept_and_status_shows_the_training_as_partial() {
    let s = workspace(1000);
    let (code, seen) = interrupt_at(&s, &["run", "p.toml"], "epoch   2/1000");
    let text = seen.join("\n");
    assert_eq!(code, Some(130), "{text}");
    assert!(
        text.contains("stopping: the running stage stops at its next safe point")
            && text.contains("  train      cancelled")
            && text.contains("interrupted by Ctrl-C: nothing half-written is left")
            && text.contains("  kept the 3 entries this run built: `p` [ingest], [eda], [prepare]"),
        "{text}"
    );
    // The checkpoint's epoch, as said.
    let said = "  kept the checkpoint of `p` [train] after epoch ";
    let line = seen.iter().find(|l| l.starts_with(said)).expect(&text);
    let done: usize = line[said.len()..].split(' ').next().unwrap().parse().unwrap();
    assert!(done >= 2, "{line}");
    assert!(
        line.ends_with(&format!(
            " of 1000: the next `fkp run` resumes at epoch {} of 1000",
            done + 1
        )),
        "{line}"
    );

    // `fkp status`: partial, with the epoch it resumes from.
    let out = s.fkp(&["status", "p.toml"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let train = text.lines().find(|l| l.starts_with("  train ")).unwrap();
    assert!(
        train.starts_with("  train      partial  ")
            && train.ends_with(&format!(
                "  a checkpoint after epoch {done}: resumes at epoch {} of 1000",
                done + 1
            )),
        "{text}"
    );
    let json = s.status_json(&["p.toml"]);
    let stage = &json["pipelines"][0]["stages"][3];
    assert_eq!(stage["stage"], "train");
    assert_eq!(stage["state"], "partial");
    assert_eq!(stage["resume_epoch"], done as u64 + 1);
    assert_eq!(
        json["pipelines"][0]["stages"][0]["resume_epoch"],
        serde_json::Value::Null
    );
    let out = s.fkp(&["status", "p.toml", "-v"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("              checkpoint .fkp/checkpoints/train-"),
        "{text}"
    );
    let err = s.ok(&["run", "p.toml", "--dry-run"]);
    assert!(
        err.contains(&format!("never built (resumes at epoch {} of 1000)", done + 1)),
        "{err}"
    );
}

#[test]
fn set_mistakes_quote_the_argument() {
    let s = workspace(3);
    s.write(
        "p.toml",
        std::fs::read_to_string(s.path("p.toml")).unwrap()
            + "[train.schedule]\nkind = \"cosine\"\nwarmup_epochs = 2\n",
    );
    let (code, err) = s.fails(&["run", "p.toml", "--set", "train.epochs=zero"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            "error: `train.epochs` must be a non-negative integer, found string\n \
             --> the command line\n  |\n  | --set train.epochs=zero\n  |                    ^^^^\n"
        ),
        "{err}"
    );
    let (_, err) = s.fails(&["run", "p.toml", "--set", "trian.epochs=2"]);
    assert!(
        err.contains(
            "none of the pipelines has [trian]\n --> the command line\n  |\n  \
             | --set trian.epochs=2\n  |       ^^^^^\n  = help: did you mean `train`?"
        ),
        "{err}"
    );
    let (_, err) = s.fails(&["run", "p.toml", "--set", "train.lr=[1,"]);
    assert!(
        err.contains("  | --set train.lr=[1,\n  |                ^^^\n"),
        "{err}"
    );
    // A mistake in the file that only the override brings about names it.
    let (code, err) = s.fails(&["run", "p.toml", "--set", "train.epochs=2"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("warmup_epochs = 2")
            && err.contains("leave none of the 2 to train")
            && err.contains("= note: with `--set train.epochs=2`"),
        "{err}"
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

/// `predict` and `export` train first when they must: they check what they
/// read and write before that training, and Ctrl-C stops it as it stops a run.
#[test]
fn predict_and_export_check_their_files_first_and_stop_on_ctrl_c() {
    let s = workspace(1000);
    let refused = [
        (
            &[
                "predict",
                "p.toml",
                "--input",
                "faces.csv",
                "--output",
                "nodir/p.csv",
            ][..],
            "nodir",
        ),
        (
            &["predict", "p.toml", "--input", "nope.csv", "--output", "p.csv"],
            "nope.csv",
        ),
        (&["export", "p.toml", "--output", "nodir/m.onnx"], "nodir"),
    ];
    for (args, named) in refused {
        let (code, err) = s.fails(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(named), "{args:?}: {err}");
        assert!(!err.contains("running"), "{args:?} trained first: {err}");
    }
    let predict = ["predict", "p.toml", "--input", "faces.csv", "--output", "p.csv"];
    let (code, seen) = interrupt_at(&s, &predict, "epoch   2/1000");
    let text = seen.join("\n");
    assert_eq!(code, Some(130), "{text}");
    assert!(
        text.contains("interrupted by Ctrl-C: nothing half-written is left")
            && text.contains("  kept the checkpoint of `p` [train] after epoch "),
        "{text}"
    );
    assert!(!s.path("p.csv").exists());
    let (code, seen) = interrupt_at(&s, &["export", "p.toml", "--output", "m.onnx"], "epoch");
    assert_eq!(code, Some(130), "{}", seen.join("\n"));
    assert!(!s.path("m.onnx").exists());
}
