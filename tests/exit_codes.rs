//! Every exit status README lists, from the real binary: 0 done, 1 failed,
//! 2 a wrong configuration or wrong arguments, whichever command reads it.
//! (3 is `fkp compare --fail-on-regression`, in report.rs; 130, 143 and 129 are
//! Ctrl-C, SIGTERM and SIGHUP, in output.rs and watch.rs; a closed standard
//! output is 0, in bad_input.rs.)

use std::time::Duration;

use crate::common::{Scratch, labelled_csv, output_within};

const GOOD: &str = "[ingest]\ntrain = \"faces.csv\"\n[prepare]\nmissing = \"mask\"\n\
                    [model]\narch = \"lenet\"\n[train]\ndevice = \"cpu\"\nepochs = 1\n";

fn workspace() -> Scratch {
    let s = Scratch::new();
    s.write("faces.csv", labelled_csv(8));
    s.write("p.toml", GOOD);
    s.write("typo.toml", GOOD.replace("epochs", "epoch"));
    s.write("gone.toml", GOOD.replace("faces.csv", "nowhere.csv"));
    s
}

#[test]
fn done_is_0() {
    let s = workspace();
    for args in [
        &["dag", "p.toml"][..],
        &["status", "p.toml"],
        &["run", "p.toml", "--dry-run"],
    ] {
        s.ok(args);
    }
}

#[test]
fn a_failure_is_1() {
    let s = workspace();
    for args in [&["run", "gone.toml"][..], &["pull", "p.toml"]] {
        let (code, err) = s.fails(args);
        assert_eq!(code, 1, "{args:?}: {err}");
    }
}

#[test]
fn a_wrong_configuration_or_argument_is_2_for_every_command() {
    let s = workspace();
    s.write("fkp.toml", "[executor]\npartiton = \"gpu\"\n");
    let wrong = [
        &["run", "typo.toml"][..],
        &["status", "typo.toml"],
        &["dag", "typo.toml"],
        &["model", "typo.toml"],
        &["compare", "typo.toml"],
        &[
            "predict",
            "typo.toml",
            "--input",
            "faces.csv",
            "--output",
            "o.csv",
        ],
        &["export", "typo.toml"],
        &["push", "typo.toml"],
        &["clean", "typo.toml", "--dry-run"],
        &["status", "p.toml", "--set", "train.epochs"],
        // fkp.toml's mistake, for every command that builds.
        &["run", "p.toml"],
        &["predict", "p.toml", "--input", "faces.csv", "--output", "o.csv"],
        &["export", "p.toml"],
        // clap's own usage errors.
        &["run", "p.toml", "--no-such-flag"],
        &["frobnicate"],
    ];
    for args in wrong {
        let (code, err) = s.fails(args);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    // `watch` says so at once rather than watching.
    let out = output_within(&mut s.command(&["watch", "p.toml"]), Duration::from_secs(60))
        .expect("fkp watch with a broken fkp.toml should stop at once");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
