//! The `[report]` stage and `fkp compare` end to end, on tiny pipelines of
//! synthetic faces: a report is cached like any stage, reruns only with what it
//! shows, fails clearly, and its HTML renders in a real browser.

use crate::common;

use std::path::Path;
use std::time::Instant;

use crate::common::{Scratch, blob_csv};
use serde_json::Value;

/// Two tiny pipelines sharing their data, and a report over them.
fn study() -> Scratch {
    let s = Scratch::new();
    s.write("faces.csv", blob_csv(80, 24, 3));
    s.write(
        "base.toml",
        "[ingest]\ntrain = \"faces.csv\"\n[eda]\nsamples = 2\n[prepare]\nmissing = \"mask\"\nval = 0.25\n\
         [model]\narch = \"lenet\"\ndropout = 0.0\n[train]\ndevice = \"cpu\"\nepochs = 1\nbatch_size = 16\n\
         [evaluate]\nsamples = 2\n",
    );
    s.write(
        "mask.toml",
        "[pipeline]\nextends = \"base.toml\"\ndescription = \"masked loss\"\n",
    );
    s.write(
        "median.toml",
        "[pipeline]\nextends = \"base.toml\"\ndescription = \"median fill\"\n[prepare]\nmissing = \"median\"\n",
    );
    s.write(
        "study.toml",
        "[pipeline]\ndescription = \"mask or median\"\n[report]\npipelines = [\"mask.toml\", \"median.toml\"]\n\
         baseline = \"median\"\n",
    );
    s
}

fn report_json(s: &Scratch) -> Value {
    serde_json::from_slice(&std::fs::read(s.path("reports/study/report.json")).unwrap()).unwrap()
}

#[test]
fn a_report_compares_trainings_whose_pipelines_have_no_eda() {
    let s = study();
    let base = std::fs::read_to_string(s.path("base.toml")).unwrap();
    s.write("base.toml", base.replace("[eda]\nsamples = 2\n", ""));
    // One member with [eda] and one without: the summary shows the one that has it.
    s.write(
        "mask.toml",
        "[pipeline]\nextends = \"base.toml\"\ndescription = \"masked loss\"\n[eda]\nsamples = 2\n",
    );
    s.ok(&["run", "study.toml", "-q"]);
    let json = report_json(&s);
    assert_eq!(json["rows"].as_array().unwrap().len(), 2, "{json}");
    let data = json["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{json}");
    assert_eq!(data[0]["pipelines"], serde_json::json!(["mask"]));
    // With no member's [eda] there is no data summary, not an empty table.
    s.write(
        "mask.toml",
        "[pipeline]\nextends = \"base.toml\"\ndescription = \"masked loss\"\n",
    );
    s.ok(&["run", "study.toml", "-q"]);
    let index = std::fs::read_to_string(s.path("reports/study/index.md")).unwrap();
    assert!(!index.contains("## Data"), "{index}");
}

#[test]
fn a_report_runs_its_pipelines_is_cached_and_reruns_only_with_what_it_shows() {
    let s = study();
    let out = s.ok(&["run", "study.toml"]);
    assert!(out.contains("report     running"), "{out}");
    for file in [
        "index.md",
        "index.html",
        "report.json",
        "val_rmse_curves.png",
        "train_loss_curves.svg",
        "keypoint_rmse.png",
        "face_rmse_distribution.png",
        "faces_by_pipeline.png",
    ] {
        assert!(s.path("reports/study").join(file).is_file(), "{file} missing");
    }
    let json = report_json(&s);
    assert_eq!(json["schema"], "fkp.report/1");
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let median = rows.iter().find(|r| r["pipeline"] == "median").unwrap();
    assert_eq!(median["delta_rmse_px"], 0.0);
    assert_eq!(median["missing"], "median");
    assert!(median["timing"]["train_seconds"].as_f64().unwrap() > 0.0);
    let metrics: Value =
        serde_json::from_slice(&std::fs::read(s.path("reports/median/metrics.json")).unwrap()).unwrap();
    assert_eq!(median["rmse_px"], metrics["validation"]["rmse_px"]);
    let index = std::fs::read_to_string(s.path("reports/study/index.md")).unwrap();
    assert!(index.contains("| rank | pipeline |"), "{index}");
    assert!(index.contains("```toml"), "{index}");

    // Fully cached: nothing runs.
    let started = Instant::now();
    let out = s.ok(&["run", "study.toml"]);
    let cached = started.elapsed();
    assert!(!out.contains("running"), "{out}");
    assert!(cached.as_secs_f64() < 2.0, "{cached:?}");

    // A description is shown, so it reruns the report and nothing else.
    s.write(
        "mask.toml",
        "[pipeline]\nextends = \"base.toml\"\ndescription = \"masked loss, renamed\"\n",
    );
    let out = s.ok(&["run", "study.toml"]);
    assert_eq!(out.matches("running").count(), 1, "{out}");
    assert!(out.contains("report     running"), "{out}");

    // A training change reruns that pipeline's training and what follows, and the report.
    s.write(
        "median.toml",
        "[pipeline]\nextends = \"base.toml\"\ndescription = \"median fill\"\n[prepare]\nmissing = \"median\"\n\
         [train]\nlr = 0.002\n",
    );
    let out = s.ok(&["run", "study.toml"]);
    let ran: Vec<&str> = out.lines().filter(|l| l.contains("running")).collect();
    assert_eq!(ran.len(), 3, "{out}");
    assert!(
        ran[0].contains("train") && ran[1].contains("evaluate") && ran[2].contains("report"),
        "{out}"
    );

    // --force-stage, --until, --dry-run and status know the report.
    let out = s.ok(&["run", "study.toml", "--force-stage", "report"]);
    assert_eq!(out.matches("running").count(), 1, "{out}");
    let out = s.ok(&["run", "study.toml", "--until", "train"]);
    assert!(!out.contains("report"), "{out}");
    let out = s.ok(&["run", "study.toml", "--dry-run"]);
    assert!(out.contains("report     cached"), "{out}");
    let status = s.status_json(&["study.toml"]);
    let names: Vec<&str> = status["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mask", "median", "study"]);
    let dag = s.ok(&["dag", "study.toml", "--dot"]);
    let dot = String::from_utf8(s.fkp(&["dag", "study.toml", "--dot"]).stdout).unwrap();
    assert!(dot.contains("label=\"report\""), "{dag}{dot}");

    // clean keeps what the report's pipelines use.
    assert_eq!(s.entries("train").len(), 3);
    s.ok(&["clean", "study.toml"]);
    assert_eq!(s.entries("train").len(), 2, "the current trainings stay");
    let out = s.ok(&["run", "study.toml"]);
    assert!(!out.contains("running"), "{out}");
}

#[test]
fn the_report_is_byte_identical_across_fresh_runs_but_for_its_timings() {
    let views = |s: &Scratch| -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        for (path, bytes) in common::files_under(&s.path("reports/study")) {
            let name = path.display().to_string();
            let bytes = match name.as_str() {
                "index.md" | "index.html" => {
                    fkp::stages::report::views::without_timing_section(&String::from_utf8(bytes).unwrap())
                        .into_bytes()
                }
                "report.json" => {
                    let mut json: Value = serde_json::from_slice(&bytes).unwrap();
                    for row in json["rows"].as_array_mut().unwrap() {
                        row["timing"] = Value::Null;
                    }
                    json.to_string().into_bytes()
                }
                _ => bytes,
            };
            files.push((name, bytes));
        }
        for (path, bytes) in common::files_under(&s.path(".fkp/entries/report")) {
            if path.file_name().is_some_and(|n| n != "timing.json") {
                files.push((path.display().to_string(), bytes));
            }
        }
        files
    };
    let a = study();
    a.ok(&["run", "study.toml", "-q"]);
    let b = study();
    b.ok(&["run", "study.toml", "-q"]);
    let (a, b) = (views(&a), views(&b));
    assert_eq!(a.len(), b.len());
    for ((name_a, bytes_a), (name_b, bytes_b)) in a.iter().zip(&b) {
        assert_eq!(name_a, name_b);
        assert!(bytes_a == bytes_b, "{name_a} differs between two fresh runs");
    }
}

#[test]
fn bad_reports_are_clear_errors() {
    let s = study();
    s.write(
        "bad.toml",
        "[report]\npipelines = [\"mask.toml\", \"gone.toml\"]\nbaseline = \"mask\"\n",
    );
    let (code, err) = s.fails(&["run", "bad.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.toml:2:27"), "{err}");
    assert!(err.contains("cannot read") && err.contains("gone.toml"), "{err}");

    s.write(
        "bad.toml",
        "[report]\npipelines = [\"mask.toml\"]\nbaseline = \"median\"\n",
    );
    let (code, err) = s.fails(&["run", "bad.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.toml:3:12"), "{err}");
    assert!(
        err.contains("`median` is not one of the listed pipelines"),
        "{err}"
    );

    s.write("nested.toml", "[report]\npipelines = [\"study.toml\"]\n");
    let (_, err) = s.fails(&["run", "nested.toml"]);
    assert!(err.contains("is itself a report"), "{err}");
    s.write(
        "itself.toml",
        "[report]\npipelines = [\"mask.toml\", \"itself.toml\"]\n",
    );
    let (code, err) = s.fails(&["run", "itself.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot list its own file"), "{err}");

    s.write("short.toml", "[ingest]\ntrain = \"faces.csv\"\n");
    s.write("lacks.toml", "[report]\npipelines = [\"short.toml\"]\n");
    let (code, err) = s.fails(&["run", "lacks.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("lacks.toml:2:14"), "{err}");
    assert!(err.contains("pipeline `short`"), "{err}");
    assert!(err.contains("has no [prepare], which a report reads"), "{err}");

    // A member that fails stops the run before the report, naming it.
    s.write(
        "broken.toml",
        "[pipeline]\nextends = \"base.toml\"\n[ingest]\ntrain = \"missing.csv\"\n",
    );
    s.write(
        "fails.toml",
        "[report]\npipelines = [\"mask.toml\", \"broken.toml\"]\n",
    );
    let (code, err) = s.fails(&["run", "fails.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pipeline `broken`"), "{err}");
    assert!(err.contains("missing.csv"), "{err}");
    assert!(err.contains("listed by report `fails`"), "{err}");
    assert!(!s.path("reports/fails/index.html").exists());

    // A report published earlier is withdrawn when a member fails: never stale numbers.
    s.ok(&["run", "study.toml", "-q"]);
    assert!(s.path("reports/study/index.html").is_file());
    s.write("faces.csv", "left_eye_center_x,left_eye_center_y,Image\n");
    let (_, err) = s.fails(&["run", "study.toml"]);
    assert!(err.contains("listed by report `study`"), "{err}");
    assert!(
        err.contains("study (") && err.contains("skipped: it reads pipeline"),
        "{err}"
    );
    assert!(
        !s.path("reports/study/index.html").exists(),
        "a stale report stayed"
    );
}

#[test]
fn compare_reads_the_cache_and_says_what_it_cannot_score() {
    let s = study();
    let out = s.fkp(&["compare", "mask.toml", "median.toml", "--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 0);
    let missing = json["not_compared"].as_array().unwrap();
    assert_eq!(missing.len(), 2);
    assert_eq!(missing[0]["state"], "missing");
    assert!(!s.path(".fkp/entries").exists(), "compare ran something");

    s.ok(&["run", "mask.toml", "median.toml", "-q"]);
    s.write(
        "median.toml",
        "[pipeline]\nextends = \"base.toml\"\n[prepare]\nmissing = \"median\"\n[train]\nepochs = 2\n",
    );
    let out = s.fkp(&["compare", "mask.toml", "median.toml"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("┆ mask "), "{text}");
    assert!(
        text.contains("not compared: `median` is stale: [train]"),
        "{text}"
    );
    // The report's baseline is the stale one: the table has no Δ, and says why.
    let out = s.fkp(&["compare", "study.toml"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("no Δ columns: the baseline `median` is stale"),
        "{text}"
    );
    assert!(!text.contains("Δ RMSE"), "{text}");

    // A report file stands for its members, with its baseline; HTML is self-contained.
    s.ok(&["run", "study.toml", "-q"]);
    let dir = s.path("out");
    let out = s.fkp(&[
        "compare",
        "study.toml",
        "--format",
        "html",
        "--output",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = String::from_utf8(out.stdout).unwrap();
    assert!(html.contains("data:image/png;base64,"), "no inline pictures");
    assert!(!html.contains("src=\"http"), "HTML must not load anything");
    for file in ["index.md", "index.html", "report.json", "keypoint_rmse.png"] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    // Each pipeline's own report is linked so that the link resolves from `out/`.
    let index = std::fs::read_to_string(dir.join("index.md")).unwrap();
    for member in ["mask", "median"] {
        let link = format!("../reports/{member}/");
        assert!(
            index.contains(&format!("Own report: [`{link}`]({link})")),
            "{index}"
        );
        assert!(dir.join(&link).join("metrics.md").is_file(), "{link}");
    }
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(html.contains("<a href=\"../reports/median/\">"), "{html}");
}

/// An earlier report with hand-set numbers: median got better by 1 px, mask
/// worse by 2% (past the 1% tolerance), PCK unchanged.
#[test]
fn against_shows_was_now_and_marks_regressions() {
    let s = study();
    s.ok(&["run", "study.toml", "-q"]);
    let mut earlier = report_json(&s);
    for row in earlier["rows"].as_array_mut().unwrap() {
        let rmse = row["rmse_px"].as_f64().unwrap();
        row["rmse_px"] = if row["pipeline"] == "median" {
            (rmse + 1.0).into()
        } else {
            (rmse / 1.02).into()
        };
    }
    s.write("earlier.json", serde_json::to_vec(&earlier).unwrap());
    let out = s.fkp(&[
        "compare",
        "study.toml",
        "--against",
        "earlier.json",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let change = |pipeline: &str, metric: &str| -> Value {
        json["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["pipeline"] == pipeline && c["metric"] == metric)
            .unwrap()
            .clone()
    };
    let median = change("median", "rmse_px");
    assert!((median["delta"].as_f64().unwrap() + 1.0).abs() < 1e-9, "{median}");
    assert_eq!(median["regression"], false);
    let mask = change("mask", "rmse_px");
    assert_eq!(mask["regression"], true, "{mask}");
    assert_eq!(change("mask", "pck_5")["regression"], false);
    assert_eq!(change("mask", "train_seconds")["regression"], false);

    let out = s.fkp(&[
        "compare",
        "study.toml",
        "--against",
        "earlier.json",
        "--format",
        "md",
    ]);
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(md.contains("1 regressions"), "{md}");
    assert!(md.contains(" → "), "{md}");

    // As CI wants it: the table, then exit 3 on a regression.
    let (code, err) = s.fails(&[
        "compare",
        "study.toml",
        "--against",
        "earlier.json",
        "--fail-on-regression",
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("1 regressions against earlier.json"), "{err}");
    s.ok(&[
        "compare",
        "study.toml",
        "--against",
        "reports/study/report.json",
        "--fail-on-regression",
    ]);
    // Nothing cached to compare: the gate fails rather than passes.
    let (code, err) = s.fails(&[
        "compare",
        "study.toml",
        "--set",
        "train.epochs=3",
        "--against",
        "earlier.json",
        "--fail-on-regression",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nothing was compared against earlier.json"), "{err}");

    s.write("not-a-report.json", "{\"schema\": \"fkp.status/1\"}");
    let (_, err) = s.fails(&["compare", "study.toml", "--against", "not-a-report.json"]);
    assert!(err.contains("not-a-report.json"), "{err}");
}

/// Headless Chromium renders the HTML report: the table is in the DOM and the
/// screenshot is not blank. Ignored by default; `.ci/run` installs Chromium and runs it.
#[test]
#[ignore = "needs Chromium on PATH (Debian's `chromium`, as `.ci/run` installs it), then `cargo test --release -- --ignored`"]
fn the_html_report_renders_in_chromium() {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| std::process::Command::new(name).arg("--version").output().is_ok())
        .expect("no Chromium on PATH: `apt-get install chromium`");
    let s = study();
    s.ok(&["run", "study.toml", "-q"]);
    let page = s.path("reports/study/index.html");
    let url = format!("file://{}", page.display());
    let profile = s.path("chromium-profile");
    let base = |extra: &[&str]| {
        let mut command = std::process::Command::new(chromium);
        command.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
        ]);
        command.args(extra);
        command.arg(&url);
        command.output().unwrap()
    };
    let dom = String::from_utf8(base(&["--dump-dom"]).stdout).unwrap();
    assert!(dom.contains("<table>"), "{dom}");
    assert!(dom.contains("<td>median</td>"), "{dom}");
    let shot = s.path("shot.png");
    base(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1200,900",
    ]);
    assert_not_blank(&shot);
}

/// A screenshot of a rendered page has dark text on a light page: many
/// distinct grey levels, not one colour.
fn assert_not_blank(png: &Path) {
    let image = image::open(png).expect("chromium wrote a PNG").to_luma8();
    let mut seen = [false; 256];
    for pixel in image.pixels() {
        seen[pixel.0[0] as usize] = true;
    }
    let levels = seen.iter().filter(|s| **s).count();
    let dark = image.pixels().filter(|p| p.0[0] < 100).count();
    assert!(
        levels > 20 && dark > 500,
        "blank screenshot: {levels} grey levels, {dark} dark pixels"
    );
}

/// Every shipped pipeline file loads; the paper's report is checked here with
/// `dag` and `status` only (it needs the Kaggle files and a GPU to run).
#[test]
fn the_shipped_pipelines_and_the_paper_report_load() {
    let s = Scratch::new();
    let pipelines = common::repo_file("pipelines");
    let mut files: Vec<String> = std::fs::read_dir(&pipelines)
        .unwrap()
        .chain(std::fs::read_dir(pipelines.join("ci")).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    let mut args = vec!["dag"];
    for file in &files {
        args.truncate(1);
        args.push(file);
        s.ok(&args);
    }
    let paper = common::repo_file("pipelines/paper.toml").display().to_string();
    let dag = String::from_utf8(s.fkp(&["dag", &paper]).stdout).unwrap();
    for member in [
        "resnet/evaluate",
        "alexnet/evaluate",
        "yolov3/evaluate",
        "ml-resnet/evaluate",
    ] {
        assert!(dag.contains(member), "{dag}");
    }
    let status = s.status_json(&[&paper]);
    let last = &status["pipelines"].as_array().unwrap().last().unwrap()["stages"][0];
    assert_eq!(last["stage"], "report");
    assert_eq!(last["state"], "missing");
}

#[test]
fn compare_takes_pipelines_without_eda() {
    let s = Scratch::new();
    s.write("faces.csv", blob_csv(40, 24, 5));
    s.write(
        "p.toml",
        "[ingest]\ntrain = \"faces.csv\"\n[prepare]\nmissing = \"mask\"\nval = 0.25\n[model]\narch = \"lenet\"\n\
         [train]\ndevice = \"cpu\"\nepochs = 1\nbatch_size = 16\n[evaluate]\n",
    );
    s.ok(&["run", "-q", "p.toml"]);
    let out = s.fkp(&["compare", "p.toml", "--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 1, "{json}");
}
