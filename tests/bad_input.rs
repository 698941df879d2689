//! Inputs a fuzzing probe found mishandled: each gets a clear error naming the
//! file (and key), in bounded time, without writing anything it should not.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::{Scratch, header, labelled_csv, output_within, row, zip_one};

/// Runs a command, failing the test if it takes longer than `limit`.
fn within(mut command: Command, limit: Duration) -> Output {
    let shown = format!("{command:?}");
    output_within(&mut command, limit).unwrap_or_else(|| panic!("{shown} hung for more than {limit:?}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn inputs_that_are_not_regular_files_are_refused_at_once() {
    let s = Scratch::new();
    std::fs::create_dir(s.path("a_dir")).unwrap();
    let fifo = s.path("a_fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let fifo = fifo.to_string_lossy().into_owned();
    for input in ["a_dir", "/dev/zero", fifo.as_str()] {
        s.write("p.toml", format!("[ingest]\ntrain = \"{input}\"\n"));
        for args in [&["run", "p.toml"][..], &["status", "p.toml"]] {
            let out = within(s.command(args), Duration::from_secs(20));
            let err = stderr(&out);
            if args[0] == "status" {
                // status shows the problem as the stage's state.
                let text = String::from_utf8_lossy(&out.stdout);
                assert!(text.contains("not a regular file"), "{input} {args:?}: {text}");
            } else {
                assert_eq!(out.status.code(), Some(1), "{input}: {err}");
                assert!(err.contains("`ingest.train`"), "{err}");
                assert!(err.contains("not a regular file"), "{err}");
            }
        }
    }
    // The pipeline file itself.
    let out = within(s.command(&["run", "/dev/zero"]), Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/dev/zero: it is not a regular file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn thousands_of_config_errors_are_reported_fast_and_capped() {
    let s = Scratch::new();
    let mut text = String::from("[ingest]\ntrain = \"t.csv\"\n");
    for i in 0..10_000 {
        text.push_str(&format!("bogus_{i} = {i}\n"));
    }
    s.write("p.toml", text);
    let started = Instant::now();
    let out = within(s.command(&["run", "p.toml"]), Duration::from_secs(30));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("unknown key `bogus_0` in [ingest]"), "{err}");
    assert!(err.contains("p.toml:3:1"), "{err}");
    assert!(err.contains("… and 9950 more errors"), "{err}");
    assert!(err.len() < 50_000, "{} bytes of errors", err.len());
}

#[test]
fn one_bad_first_row_does_not_decide_the_image_side() {
    let s = Scratch::new();
    let mut text = format!("{}\n", header());
    // An image of 7x7 pixels first, then 20 good 8x8 rows.
    let seven = vec!["5"; 49].join(" ");
    text.push_str(&format!("1,1,2,2,3,3,{seven}\n"));
    for i in 0..20 {
        text.push_str(&format!("{}\n", row(i, false)));
    }
    s.write("t.csv", &text);
    s.write("p.toml", "[ingest]\ntrain = \"t.csv\"\non_bad_row = \"skip\"\n");
    s.ok(&["run", "p.toml"]);
    let meta = std::fs::read(s.entries("ingest")[0].join("data/ingest.json")).unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&meta).unwrap();
    assert_eq!(meta["side"], 8);
    assert_eq!(meta["train_rows"], 20);
    assert_eq!(meta["train_skipped"], 1);

    // Without skipping, the error is about the odd row, not the 20 good ones.
    s.write("p.toml", "[ingest]\ntrain = \"t.csv\"\n");
    let (code, err) = s.fails(&["run", "p.toml"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("t.csv:2: column `Image`: 49 pixels, expected 64 (8x8 like most rows)"),
        "{err}"
    );
}

#[test]
fn every_pipeline_name_is_checked_before_anything_runs() {
    let s = Scratch::new();
    s.write("t.csv", labelled_csv(4));
    let long = "n".repeat(250);
    let cases = [
        ("...toml".to_string(), String::new()),
        ("p.toml".to_string(), "[pipeline]\nname = \"a\\nb\"\n".to_string()),
        ("p.toml".to_string(), format!("[pipeline]\nname = \"{long}\"\n")),
    ];
    for (file, meta) in cases {
        s.write(&file, format!("{meta}[ingest]\ntrain = \"t.csv\"\n"));
        let (code, err) = s.fails(&["run", &file]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("invalid pipeline name"), "{err}");
        assert!(err.len() < 2_000, "{err}");
        assert!(!s.path(".fkp").exists(), "{file}: something ran");
        assert!(!s.path("ingest").exists() && !s.path("reports").exists());
    }
}

#[test]
fn clean_accepts_pipelines_under_the_pipelines_folder() {
    let s = Scratch::new();
    s.write("t.csv", labelled_csv(4));
    s.write("pipelines/a.toml", "[ingest]\ntrain = \"../t.csv\"\n");
    s.ok(&["run", "pipelines/a.toml"]);
    let out = s.ok(&["clean", "pipelines/a.toml", "./pipelines/a.toml"]);
    assert!(out.contains("removed 0 entries"), "{out}");
    assert_eq!(s.entries("ingest").len(), 1);
}

#[cfg(unix)]
#[test]
fn a_workspace_whose_path_is_not_utf8_works() {
    use std::os::unix::ffi::OsStrExt;
    let s = Scratch::new();
    let odd = s.path("").join(std::ffi::OsStr::from_bytes(b"ws\xff"));
    std::fs::create_dir(&odd).unwrap();
    std::fs::write(odd.join("t.csv"), labelled_csv(4)).unwrap();
    std::fs::write(odd.join("p.toml"), "[ingest]\ntrain = \"t.csv\"\n").unwrap();
    for args in [
        &["run", "p.toml"][..],
        &["status", "p.toml", "--json"],
        &["run", "p.toml"],
    ] {
        let out = s.command(args).current_dir(&odd).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let out = s
        .command(&["status", "p.toml", "--json"])
        .current_dir(&odd)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["pipelines"][0]["stages"][0]["state"], "cached");
}

#[test]
fn messages_quote_little_and_say_each_thing_once() {
    let s = Scratch::new();
    s.write("p.toml", "[ingest]\ntrain = \"nowhere.csv\"\n");
    let (_, err) = s.fails(&["run", "p.toml"]);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");

    // A 10 MB header line.
    s.write("big.csv", format!("{}_x,Image\n", "k".repeat(10 << 20)));
    s.write("p.toml", "[ingest]\ntrain = \"big.csv\"\n");
    let (_, err) = s.fails(&["run", "p.toml"]);
    assert!(err.len() < 2_000, "{} bytes of error", err.len());

    // An empty zip archive.
    let empty = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()))
        .finish()
        .unwrap()
        .into_inner();
    s.write("empty.zip", empty);
    s.write("p.toml", "[ingest]\ntrain = \"empty.zip\"\n");
    let out = s.fkp(&["run", "p.toml"]);
    assert!(!out.stderr.contains(&0), "NUL bytes on stderr");
    assert!(
        stderr(&out).contains("the zip archive is empty"),
        "{}",
        stderr(&out)
    );

    // A zip holding a binary file named .csv: no raw control bytes either.
    s.write("bin.zip", zip_one("t.csv", b"\x00\x01\x02,\x07\x1b[31m\n"));
    s.write("p.toml", "[ingest]\ntrain = \"bin.zip\"\n");
    let out = s.fkp(&["run", "p.toml"]);
    assert!(
        !out.stderr.iter().any(|&b| b < 0x20 && b != b'\n'),
        "{}",
        stderr(&out)
    );
}

#[test]
fn extends_cycles_and_bad_text_point_at_their_line() {
    let s = Scratch::new();
    s.write("a.toml", "[pipeline]\nextends = \"b.toml\"\n");
    s.write("b.toml", "# b\n[pipeline]\nextends = \"a.toml\"\n");
    let (code, err) = s.fails(&["run", "a.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("`extends` forms a cycle"), "{err}");
    assert!(err.contains("b.toml:3:11"), "{err}");

    s.write("u.toml", b"[ingest]\n\ntrain = \"t\xff.csv\"\n");
    let (code, err) = s.fails(&["run", "u.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("not UTF-8"), "{err}");
    assert!(err.contains("u.toml:3:11"), "{err}");
}

#[test]
fn a_closed_or_full_stdout_is_no_panic() {
    let s = Scratch::new();
    s.write("t.csv", labelled_csv(4));
    s.write("p.toml", "[ingest]\ntrain = \"t.csv\"\n");
    s.ok(&["run", "p.toml"]);
    for args in [
        &["status", "p.toml", "--json"][..],
        &["run", "p.toml"],
        &["dag", "p.toml"],
    ] {
        let mut child = s
            .command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = s
        .command(&["status", "p.toml", "--json"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot write to standard output"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn control_characters_in_a_header_are_refused() {
    let s = Scratch::new();
    let pixels = ["1"; 4].join(" ");
    s.write(
        "t.csv",
        format!("nose\x1b[31m\x07_tip_x,nose\x1b[31m\x07_tip_y,Image\n1,1,{pixels}\n"),
    );
    s.write("p.toml", "[ingest]\ntrain = \"t.csv\"\n");
    let (code, err) = s.fails(&["run", "p.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("control character"), "{err}");
    assert!(!err.contains('\x1b') && !err.contains('\x07'), "{err:?}");
}

#[test]
fn every_input_and_the_device_are_checked_before_anything_runs() {
    let s = Scratch::new();
    s.write("t.csv", labelled_csv(8));
    let stages = "[ingest]\ntrain = \"t.csv\"\n[prepare]\nval = 0.5\n[model]\narch = \"lenet\"\n";
    s.write(
        "p.toml",
        format!("{stages}[train]\ndevice = \"cpu\"\n[evaluate]\ndata = \"typo.csv\"\n"),
    );
    let (code, err) = s.fails(&["run", "p.toml"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("`evaluate.data`") && err.contains("typo.csv"),
        "{err}"
    );
    assert!(!s.path(".fkp/entries").exists(), "something ran: {err}");
    if cfg!(not(feature = "cuda")) {
        s.write("p.toml", format!("{stages}[train]\ndevice = \"cuda\"\n"));
        let (code, err) = s.fails(&["run", "p.toml"]);
        assert_eq!(code, 1);
        assert!(err.contains("built without CUDA"), "{err}");
        assert!(!s.path(".fkp/entries").exists(), "something ran: {err}");
    }
}

#[test]
fn predict_never_writes_over_its_inputs() {
    let s = Scratch::new();
    s.write("t.csv", labelled_csv(8));
    let before = std::fs::read(s.path("t.csv")).unwrap();
    s.write(
        "p.toml",
        "[ingest]\ntrain = \"t.csv\"\n[prepare]\nval = 0.5\n[model]\narch = \"lenet\"\n[train]\ndevice = \"cpu\"\nepochs = 1\n",
    );
    for output in ["t.csv", "./t.csv", "p.toml"] {
        let (code, err) = s.fails(&["predict", "p.toml", "--input", "t.csv", "--output", output]);
        assert_eq!(code, 1);
        assert!(err.contains("refusing to overwrite it"), "{err}");
    }
    assert_eq!(std::fs::read(s.path("t.csv")).unwrap(), before);
}

#[test]
fn hints_know_every_key_and_which_kind_a_key_belongs_to() {
    let s = Scratch::new();
    s.write("p.toml", "[ingest]\ntrain = \"t.csv\"\nimage_sid = 8\n");
    let (_, err) = s.fails(&["run", "p.toml"]);
    assert!(err.contains("did you mean `image_side`?"), "{err}");
    s.write(
        "p.toml",
        "[ingest]\ntrain = \"t.csv\"\n[prepare]\n[model]\narch = \"lenet\"\n[train]\nnesterov = true\n[train.schedule]\ngamma = 0.5\n",
    );
    let (code, err) = s.fails(&["run", "p.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("`gamma` is a key of kind = \"exponential\", not \"none\""),
        "{err}"
    );
    assert!(err.contains("`nesterov` is an SGD setting"), "{err}");
    assert!(err.contains("p.toml:7:12"), "{err}");
}

#[test]
fn files_whose_rows_are_all_bad_say_so() {
    let s = Scratch::new();
    s.write("t.csv", format!("{}\n1,1,1,1,1,1,1 2 3\n", header()));
    s.write("p.toml", "[ingest]\ntrain = \"t.csv\"\non_bad_row = \"skip\"\n");
    let (_, err) = s.fails(&["run", "p.toml"]);
    assert!(
        err.contains("every one of its 1 rows was skipped as bad; the first:"),
        "{err}"
    );
}

#[test]
fn config_errors_of_every_file_and_duplicate_names_exit_2() {
    let s = Scratch::new();
    s.write("a.toml", "[ingest]\ntrian = \"t.csv\"\n");
    s.write("b.toml", "[ingest]\ntrain = \"t.csv\"\n[edaa]\n");
    let (code, err) = s.fails(&["run", "a.toml", "b.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("a.toml:2:1") && err.contains("b.toml:3:2"), "{err}");
    s.write("sub/a.toml", "[ingest]\ntrain = \"t.csv\"\n");
    s.write("a.toml", "[ingest]\ntrain = \"t.csv\"\n");
    let (code, err) = s.fails(&["run", "a.toml", "sub/a.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("are both named `a`"), "{err}");
}
