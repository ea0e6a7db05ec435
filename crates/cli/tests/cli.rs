//! The `thaw` binary as a user runs it, against the real default model.

use std::process::{Command, Output};

fn thaw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_thaw"))
        .args(args)
        .output()
        .expect("run thaw")
}

/// `thaw ARGS` with stdin, stdout and stderr all pipes held by the test.
fn spawn_piped(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_thaw"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run thaw")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn model() -> Option<String> {
    match thaw_hub::ensure_model("smollm2") {
        Ok(p) => Some(p.display().to_string()),
        Err(e) => {
            eprintln!("skipped: smollm2 unavailable: {e}");
            None
        }
    }
}

#[test]
fn run_answers_a_prompt_with_the_default_model() {
    if model().is_none() {
        return;
    }
    let o = thaw(&[
        "run",
        "--temperature",
        "0",
        "-n",
        "12",
        "-v",
        "What is 2+2?",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).trim().len() > 3, "answer: {:?}", stdout(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("generated: 12 tokens"), "summary: {err}");
}

#[test]
fn same_seed_same_text_and_greedy_is_deterministic() {
    let Some(m) = model() else { return };
    let run = |seed: &str| {
        stdout(&thaw(&[
            "run",
            &m,
            "--seed",
            seed,
            "--temperature",
            "1.0",
            "-n",
            "24",
            "Tell me a story.",
        ]))
    };
    let (a, b) = (run("7"), run("7"));
    assert_eq!(a, b);
    assert!(!a.trim().is_empty());
    let g = |t: &str| stdout(&thaw(&["run", &m, "--temperature", "0", "-n", "16", t]));
    assert_eq!(g("Name a color."), g("Name a color."));
}

#[test]
fn raw_mode_continues_text_and_prompt_from_stdin() {
    let Some(m) = model() else { return };
    let o = thaw(&[
        "run",
        &m,
        "--raw",
        "--temperature",
        "0",
        "-n",
        "8",
        "1, 2, 3, 4,",
    ]);
    assert!(o.status.success());
    // A counting model continues the sequence: the answer contains the next number.
    assert!(stdout(&o).contains('5'), "continuation: {:?}", stdout(&o));

    let mut child = Command::new(env!("CARGO_BIN_EXE_thaw"))
        .args(["run", &m, "--temperature", "0", "-n", "8"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Say hello.")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert!(!stdout(&o).trim().is_empty());
}

#[test]
fn interactive_chat_keeps_history_and_leaves_on_bye() {
    let Some(m) = model() else { return };
    // stdin is a pipe here, which would mean "read the prompt from stdin";
    // `--chat` asks for the line-by-line chat anyway.
    let mut child = Command::new(env!("CARGO_BIN_EXE_thaw"))
        .args(["run", &m, "--temperature", "0", "-n", "4", "-v", "--chat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"Hi there.\nWhat did I just say?\n/bye\nnot read\n")
        .unwrap();
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert_eq!(
        out.matches(">>> ").count(),
        3,
        "three prompts shown: {out:?}"
    );
    // The second turn reused the first turn's KV cache (history kept).
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("reused"), "{err}");
}

#[test]
fn unknown_model_and_bad_options_are_clear_errors() {
    let o = thaw(&["run", "-m", "no-such-model", "hi"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no-such-model"), "{err}");
    assert!(err.contains("smollm2"), "lists the known names: {err}");

    if model().is_some() {
        let o = thaw(&["run", "--top-p", "1.5", "-n", "1", "hi"]);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("top_p"));
        // An empty question, as an argument or piped, is refused, not answered.
        for args in [&["run", "-n", "1", "  "][..], &["run", "-n", "1"][..]] {
            let o = thaw(args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                !o.status.success() && err.contains("prompt is empty"),
                "{args:?}: {err}"
            );
        }
    }
}

#[test]
fn too_long_prompt_is_an_error_not_a_crash() {
    let Some(m) = model() else { return };
    let long = "word ".repeat(400);
    let o = thaw(&["run", &m, "--raw", "-c", "64", "-n", "1", &long]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("context"), "{err}");
}

#[test]
fn list_and_inspect_show_the_cached_model() {
    if model().is_none() {
        return;
    }
    let o = thaw(&["list", "--known"]);
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(
        out.contains("smollm2") && out.contains("gemma3-270m"),
        "{out}"
    );
    let o = thaw(&["inspect", "smollm2"]);
    assert!(stdout(&o).contains("general.architecture = \"llama\""));
}

#[test]
fn perplexity_of_a_text_is_finite_and_plausible() {
    if model().is_none() {
        return;
    }
    let o = thaw(&[
        "perplexity",
        "smollm2",
        "/usr/share/common-licenses/Apache-2.0",
        "--ctx",
        "128",
        "--json",
    ]);
    if !std::path::Path::new("/usr/share/common-licenses/Apache-2.0").exists() {
        eprintln!("skipped: no Apache-2.0 text on this machine");
        return;
    }
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ppl = v["perplexity"].as_f64().unwrap();
    // A working 135M model on English legal text: far below uniform (49,152) and
    // above 1; a broken forward pass lands in the hundreds or thousands.
    assert!(ppl > 2.0 && ppl < 60.0, "perplexity {ppl}");
}

#[test]
fn snapshot_build_verify_and_run_match_the_gguf() {
    let Some(m) = model() else { return };
    let dir = std::env::temp_dir().join(format!("thaw-cli-snap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let snap = dir.join("smollm2.thaw");
    let snap_s = snap.display().to_string();
    let o = thaw(&["snapshot", "build", &m, "-o", &snap_s]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(thaw(&["snapshot", "verify", &snap_s]).status.success());
    assert!(stdout(&thaw(&["snapshot", "inspect", &snap_s])).contains("GGUF"));
    let greedy = |model: &str| {
        stdout(&thaw(&[
            "run",
            model,
            "--temperature",
            "0",
            "-n",
            "16",
            "Why is the sky blue?",
        ]))
    };
    assert_eq!(greedy(&snap_s), greedy(&m));
    // A damaged snapshot is refused with a message saying how to rebuild it.
    let mut bytes = std::fs::read(&snap).unwrap();
    bytes[12] ^= 0xff;
    std::fs::write(&snap, &bytes).unwrap();
    let o = thaw(&["run", &snap_s, "-n", "1", "hi"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("thaw snapshot build"));
    std::fs::remove_dir_all(&dir).ok();
}

/// stdout of a `thaw` run that must succeed.
fn thaw_ok(args: &[&str]) -> String {
    let o = thaw(args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    stdout(&o)
}

/// A file in the temp dir, unique to this test process.
fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("thaw-cli-{}-{name}", std::process::id()));
    std::fs::write(&p, text).expect("write temp file");
    p
}

#[test]
fn json_schema_and_tools_flags_constrain_the_answer() {
    let Some(m) = model() else { return };
    let schema = temp_file(
        "person.json",
        r#"{"type": "object", "properties": {"name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "pets": {"type": "array", "items": {"enum": ["cat", "dog"]}}},
            "required": ["name", "age", "pets"]}"#,
    );
    // An empty tools array is a clear error, not the grammar engine's internals.
    let none = temp_file("no-tools.json", "[]");
    let o = thaw(&["run", &m, "--tools", none.to_str().unwrap(), "hi"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("tools array is empty"),
        "{err}"
    );
    // The schema inline instead of in a file; inline JSON that does not parse is
    // named as such.
    let text = std::fs::read_to_string(&schema).unwrap();
    let out = thaw_ok(&[
        "run",
        &m,
        "--json-schema",
        &text,
        "--temperature",
        "0",
        "-n",
        "60",
        "Invent a person.",
    ]);
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"));
    assert!(v["name"].is_string() && v["pets"].is_array(), "{v}");
    let o = thaw(&["run", &m, "--json-schema", "{\"type\": ", "hi"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("inline JSON argument is not valid JSON"),
        "{err}"
    );
    // Sampled, and with a budget tight enough that the model must be wrapped up.
    for (seed, n) in [("1", "24"), ("2", "40"), ("3", "200")] {
        let schema = schema.to_str().unwrap();
        let out = thaw_ok(&[
            "run",
            &m,
            "--json-schema",
            schema,
            "--temperature",
            "1.0",
            "--seed",
            seed,
            "-n",
            n,
            "Invent a person.",
        ]);
        let v: serde_json::Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"));
        assert!(v["name"].is_string(), "{v}");
        assert!((0..=120).contains(&v["age"].as_i64().expect("age")), "{v}");
        for p in v["pets"].as_array().expect("pets") {
            assert!(p == "cat" || p == "dog", "{v}");
        }
    }
    let tools = temp_file(
        "tools.json",
        r#"[{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"},
            "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}},
           {"type": "function", "function": {"name": "get_time", "parameters":
            {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}]"#,
    );
    for choice in ["required", "get_time"] {
        let tools = tools.to_str().unwrap();
        let out = thaw_ok(&[
            "run",
            &m,
            "--tools",
            tools,
            "--tool-choice",
            choice,
            "--temperature",
            "0",
            "-n",
            "80",
            "What is the weather in Paris?",
        ]);
        let line = out
            .lines()
            .find(|l| l.starts_with("{\"tool_calls\""))
            .unwrap_or_else(|| panic!("no tool_calls line: {out:?}"));
        let v: serde_json::Value = serde_json::from_str(line).expect("calls line is JSON");
        let calls = v["tool_calls"].as_array().expect("array");
        assert!(!calls.is_empty(), "{line}");
        for c in calls {
            let name = c["name"].as_str().expect("name");
            let key = if name == "get_weather" {
                "city"
            } else {
                "zone"
            };
            assert!(choice == "required" || name == choice, "{line}");
            assert!(c["arguments"][key].is_string(), "{line}");
        }
        // A named tool is exactly one call of it.
        assert!(choice == "required" || calls.len() == 1, "{line}");
    }
    let o = thaw(&[
        "run",
        &m,
        "--tools",
        tools.to_str().unwrap(),
        "--tool-choice",
        "nope",
        "-n",
        "4",
        "hi",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope"));
    let bad = temp_file(
        "bad.json",
        r#"{"type": "object", "if": {"required": ["a"]}}"#,
    );
    let o = thaw(&[
        "run",
        &m,
        "--json-schema",
        bad.to_str().unwrap(),
        "-n",
        "4",
        "hi",
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("`if`"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for f in [schema, tools, bad] {
        let _ = std::fs::remove_file(f);
    }
}

/// `thaw run` on a GGUF freezes it in a process of its own once it has answered; the
/// next run thaws the snapshot and answers the same (greedy) text; a damaged snapshot
/// is dropped and the GGUF used; `THAW_FREEZE=0` makes none.
#[test]
fn run_freezes_the_gguf_for_the_next_run() {
    let Some(m) = model() else { return };
    let home = std::env::temp_dir().join(format!("thaw-run-freeze-{}", std::process::id()));
    let snapshots = home.join("snapshots");
    let run = |env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_thaw"));
        c.env("THAW_HOME", &home);
        for (k, v) in env {
            c.env(k, v);
        }
        c.args([
            "run",
            &m,
            "--temperature",
            "0",
            "-n",
            "8",
            "-v",
            "Name a colour.",
        ]);
        let o = c.output().expect("run thaw");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (stdout(&o), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let frozen = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&snapshots)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    // The snapshot appears once the detached build is done (a temporary file first).
    let wait_frozen = || {
        for _ in 0..600 {
            let files = frozen();
            if files.len() == 1 && files[0].extension().is_some_and(|e| e == "thaw") {
                return files[0].clone();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("no snapshot after 60 s: {:?}", frozen());
    };

    let off = run(&[("THAW_FREEZE", "0")]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(frozen().is_empty(), "THAW_FREEZE=0 froze: {:?}", frozen());

    let (first, err) = run(&[]);
    assert!(!err.contains("thawing"), "{err}");
    assert_eq!(first, off.0);
    let snap = wait_frozen();
    let (second, err) = run(&[]);
    assert!(
        err.contains("thawing"),
        "the second run did not thaw: {err}"
    );
    assert_eq!(second, first, "the snapshot answers as the GGUF did");

    // Damaged: a warning, the GGUF's answer, and a fresh snapshot built again.
    let bytes = std::fs::read(&snap).unwrap();
    std::fs::write(&snap, &bytes[..bytes.len() / 3]).unwrap();
    let (third, err) = run(&[]);
    assert!(err.contains("did not load"), "{err}");
    assert_eq!(third, first);
    let again = wait_frozen();
    assert_eq!(std::fs::metadata(&again).unwrap().len(), bytes.len() as u64);
    std::fs::remove_dir_all(&home).unwrap();
}

/// `thaw` with stdin closed (no piped text), stdout and stderr piped.
fn spawn(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_thaw"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn thaw")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A command whose stdout is a pipe closed early (`| head`) ends quietly: by
/// SIGPIPE or successfully, never in a panic (exit 101).
#[test]
fn closed_stdout_ends_quietly_not_in_a_panic() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let Some(m) = model() else { return };
    let check = |o: Output, what: &str| {
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert!(!err.contains("Broken pipe"), "{what}: {err}");
        assert_ne!(o.status.code(), Some(101), "{what}: {err}");
        assert!(
            o.status.success() || o.status.signal() == Some(13),
            "{what}: {:?} {err}",
            o.status
        );
    };
    // `thaw run "Write a long story" -n 100 | head -c 10`
    let mut child = spawn(&[
        "run",
        &m,
        "--temperature",
        "0",
        "-n",
        "100",
        "Write a long story.",
    ]);
    let mut head = [0u8; 10];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    check(child.wait_with_output().unwrap(), "run");
    // `thaw inspect smollm2 --tensors | head -0`, `thaw list --known | head -0`.
    for args in [&["inspect", &m, "--tensors"][..], &["list", "--known"]] {
        let mut child = spawn(args);
        drop(child.stdout.take());
        check(child.wait_with_output().unwrap(), args[0]);
    }
}

/// "prompt: N tokens" of a `-v` summary.
fn prompt_tokens(err: &str) -> usize {
    let at = err.find("prompt: ").expect("a -v summary") + "prompt: ".len();
    err[at..].split(' ').next().unwrap().parse().unwrap()
}

/// `seq 1 200 | thaw run "Summarize this"`: the piped text follows the prompt.
#[test]
fn piped_stdin_goes_with_a_prompt_argument() {
    let Some(m) = model() else { return };
    let args = [
        "run",
        &m,
        "--temperature",
        "0",
        "-n",
        "1",
        "-v",
        "Summarize this",
    ];
    let alone = thaw(&args);
    assert!(alone.status.success(), "{}", stderr(&alone));
    let mut child = spawn_piped(&args);
    let numbers: String = (1..=200).map(|i| format!("{i}\n")).collect();
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(numbers.as_bytes()).unwrap();
    drop(stdin);
    let piped = child.wait_with_output().unwrap();
    assert!(piped.status.success(), "{}", stderr(&piped));
    let (a, p) = (
        prompt_tokens(&stderr(&alone)),
        prompt_tokens(&stderr(&piped)),
    );
    // 200 numbers and their newlines: several hundred tokens more.
    assert!(
        p > a + 400,
        "prompt tokens: {a} alone, {p} with the piped text"
    );
    // An idle pipe that nobody writes to or closes (a harness's stdin) is not waited
    // on: the prompt is answered alone.
    let mut child = spawn_piped(&args);
    let idle = child.stdin.take().unwrap();
    let start = std::time::Instant::now();
    let out = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed().as_secs() < 60,
            "thaw run waited on an idle stdin"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    drop(idle);
    let rest = child.wait_with_output().unwrap();
    assert!(out.success(), "{}", stderr(&rest));
    assert_eq!(prompt_tokens(&stderr(&rest)), a);
}

/// Ctrl-C stops a one-shot answer with exit 130, during generation and during the
/// prompt (between its 512-token chunks, long before the prompt's end).
#[test]
fn ctrl_c_stops_a_one_shot_run_with_exit_130() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use std::io::Read;
    let Some(m) = model() else { return };
    let sigint = |child: &std::process::Child| {
        kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    };
    let mut child = spawn(&[
        "run",
        &m,
        "--temperature",
        "0",
        "-n",
        "-1",
        "Write a long story about a dragon.",
    ]);
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    out.read_exact(&mut first).unwrap();
    sigint(&child);
    let mut rest = Vec::new();
    out.read_to_end(&mut rest).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{:?} {}", o.status, stderr(&o));

    // A ~3,800-token prompt takes seconds to process on a few cores.
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(380);
    let child = spawn(&["run", &m, "-c", "4096", "-n", "4", "-v", &long]);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    sigint(&child);
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{:?} {err}", o.status);
    let at = err
        .find("[stopped while processing the prompt: ")
        .unwrap_or_else(|| panic!("not stopped during the prompt: {err}"));
    let counts: Vec<usize> = err[at..]
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(2)
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(counts[0] < counts[1], "{err}");
    assert_eq!(stdout(&o).trim(), "", "nothing was generated");
}

/// A lone argument shaped like a model file that does not exist is a missing model,
/// not a prompt for the default model.
#[test]
fn missing_model_file_is_an_error_not_a_prompt() {
    for args in [
        &["run", "missing.gguf"][..],
        &["run", "dir/missing.thaw"],
        &["run", "missing.gguf", "hi"],
        &["run", "-m", "missing.gguf", "hi"],
    ] {
        let o = thaw(args);
        assert!(!o.status.success(), "{args:?}");
        assert!(stdout(&o).is_empty(), "{args:?} answered: {}", stdout(&o));
        assert!(stderr(&o).contains("no such model file"), "{}", stderr(&o));
    }
}

/// llama.cpp's `--seed -1` (random) and `-n -1` (no limit); other negative values
/// are errors that say what -1 means; `-t` beyond the cores is capped with a warning.
#[test]
fn minus_one_seed_and_max_tokens_as_llama_cpp() {
    let Some(m) = model() else { return };
    // No limit: a raw continuation runs until the 48-token context is full (or the
    // model stops).
    let o = thaw(&[
        "run", &m, "--raw", "--seed", "-1", "-n", "-1", "-c", "48", "-v", "-t", "999", "1, 2, 3,",
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("ContextFull") || err.contains("Stop"), "{err}");
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(
        err.contains(&format!("-t 999 is more than the {cores} cores available")),
        "{err}"
    );
    for (flag, value) in [("--seed", "-2"), ("-n", "-5")] {
        let o = thaw(&["run", &m, flag, value, "hi"]);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(err.contains("negative") && err.contains("-1"), "{err}");
    }
}

/// `--raw --system S P` sends "S\nP": the same greedy answer as the raw prompt
/// written that way.
#[test]
fn raw_system_text_is_a_line_before_the_prompt() {
    let Some(m) = model() else { return };
    let greedy = |args: &[&str]| {
        let mut a = vec!["run", &m, "--raw", "--temperature", "0", "-n", "8", "-v"];
        a.extend_from_slice(args);
        let o = thaw(&a);
        assert!(o.status.success(), "{}", stderr(&o));
        (stdout(&o), prompt_tokens(&stderr(&o)))
    };
    let with_system = greedy(&["--system", "Write a poem.", "Roses are red,"]);
    assert_eq!(with_system, greedy(&["Write a poem.\nRoses are red,"]));
    assert_ne!(with_system, greedy(&["Write a poem.Roses are red,"]));
}

/// `thaw inspect FILE.thaw` shows the snapshot's embedded GGUF; the snapshot
/// commands' file errors say what to do, once.
#[test]
fn inspect_takes_a_snapshot_and_snapshot_errors_are_clear() {
    let Some(m) = model() else { return };
    let dir = std::env::temp_dir().join(format!("thaw-cli-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let snap = dir.join("s.thaw").display().to_string();
    thaw_ok(&["snapshot", "build", &m, "--no-chat-preamble", "-o", &snap]);
    let out = thaw_ok(&["inspect", &snap]);
    assert!(out.contains("general.architecture = \"llama\""), "{out}");
    assert!(out.contains("thaw snapshot inspect"), "{out}");
    assert!(out.contains("tensor types:"), "{out}");
    // The build time is an RFC 3339 UTC timestamp, not raw unix seconds.
    let out = thaw_ok(&["snapshot", "inspect", &snap]);
    let built = out
        .lines()
        .find_map(|l| l.strip_prefix("built         "))
        .unwrap_or_else(|| panic!("no built line: {out}"));
    let stamp = built.split(' ').next().unwrap();
    assert!(
        stamp.len() == 20
            && stamp.starts_with("20")
            && stamp.ends_with('Z')
            && stamp.chars().enumerate().all(|(i, c)| match i {
                4 | 7 => c == '-',
                10 => c == 'T',
                13 | 16 => c == ':',
                19 => c == 'Z',
                _ => c.is_ascii_digit(),
            })
            && built.contains(" by thaw "),
        "{built}"
    );

    let o = thaw(&["snapshot", "build", &m, "-o", "missing-thaw-dir/sub/x.thaw"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(
            "directory missing-thaw-dir/sub does not exist; create it or choose another -o"
        ),
        "{}",
        stderr(&o)
    );
    let o = thaw(&["snapshot", "build", &m, "-o", &dir.display().to_string()]);
    assert!(stderr(&o).contains("is a directory"), "{}", stderr(&o));
    let o = thaw(&["snapshot", "verify", "/no/such/file.thaw"]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `thaw bench -p 0` measures generation only (as llama-bench); `-r 0` is an error.
#[test]
fn bench_generation_only_and_zero_reps() {
    let Some(m) = model() else { return };
    let out = thaw_ok(&["bench", &m, "-p", "0", "-n", "2", "-r", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tests: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["test"].as_str().unwrap())
        .collect();
    assert_eq!(tests, ["tg2"]);
    let o = thaw(&["bench", &m, "-r", "0"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("at least 1"), "{}", stderr(&o));
}

/// A `THAW_LOG` that is not a log filter is named in one warning on stderr, `warn` is
/// used and the command goes on; a valid one (or none) adds no warning.
#[test]
fn invalid_thaw_log_is_a_warning_not_silence() {
    let home = std::env::temp_dir().join(format!("thaw-cli-log-{}", std::process::id()));
    let list = |log: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_thaw"));
        c.env("THAW_HOME", &home).args(["list", "--known"]);
        match log {
            Some(v) => c.env("THAW_LOG", v),
            None => c.env_remove("THAW_LOG"),
        };
        c.output().expect("run thaw")
    };
    let plain = list(None);
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert_eq!(stderr(&plain), "");
    for (bad, directive) in [
        ("debug,,=x", "`=x`"),
        ("notalevel=", "`notalevel=`"),
        ("warning", "`warning`"),
        ("info,debg", "`debg`"),
    ] {
        let o = list(Some(bad));
        let err = stderr(&o);
        assert!(o.status.success(), "{bad}: {err}");
        assert_eq!(stdout(&o), stdout(&plain), "{bad}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{bad}: {err}");
        assert!(
            lines[0].starts_with("warning: ")
                && lines[0].contains(&format!("THAW_LOG={bad:?}"))
                && lines[0].contains(directive)
                && lines[0].ends_with("logging at `warn` instead"),
            "{bad}: {err}"
        );
    }
    for good in [
        "info",
        "thaw_server=debug,warn",
        "debug,",
        "WARN",
        "thaw_engine",
    ] {
        let o = list(Some(good));
        assert!(o.status.success(), "{good}: {}", stderr(&o));
        assert!(!stderr(&o).contains("warning"), "{good}: {}", stderr(&o));
    }
    std::fs::remove_dir_all(&home).ok();
}

/// A `--json-schema` or `--tools` answer cut off before its JSON closed (by `-n`, or a
/// full context) says so on stderr and exits with status 3; one that closes exits 0.
#[test]
fn json_cut_by_the_token_limit_warns_and_exits_3() {
    let Some(m) = model() else { return };
    // Two required strings: the shortest closing is more than 3 tokens.
    let schema_file = temp_file(
        "cut.json",
        r#"{"type": "object", "properties": {"name": {"type": "string"},
            "city": {"type": "string"}}, "required": ["name", "city"]}"#,
    );
    let schema = schema_file.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", &m, "--temperature", "0"];
        args.extend_from_slice(extra);
        thaw(&args)
    };
    let o = run(&["--json-schema", schema, "-n", "3", "Invent a person."]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("stopped at the -n token limit (3) before the JSON value closed")
            && err.contains("raise -n"),
        "{err}"
    );
    assert!(serde_json::from_str::<serde_json::Value>(stdout(&o).trim()).is_err());

    let o = run(&[
        "--json-schema",
        schema,
        "-n",
        "200",
        "-v",
        "Invent a person.",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("warning"), "{err}");
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("JSON");
    assert!(v["name"].is_string() && v["city"].is_string(), "{v}");

    // A full context cuts it the same way: 3 tokens of room after the prompt.
    let room = (prompt_tokens(&err) + 3).to_string();
    let o = run(&["--json-schema", schema, "-c", &room, "Invent a person."]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("filled the context") && err.contains("raise --ctx-size"),
        "{err}"
    );

    let tools_file = temp_file(
        "cut-tools.json",
        r#"[{"type": "function", "function": {"name": "get_weather", "parameters":
            {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]"#,
    );
    let tools = tools_file.to_str().unwrap();
    let ask = "What is the weather in Paris?";
    for n in ["1", "3", "8"] {
        let o = run(&["--tools", tools, "--tool-choice", "required", "-n", n, ask]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(3), "-n {n}: {err}");
        assert!(
            err.contains("before the tool call's JSON closed"),
            "-n {n}: {err}"
        );
        assert!(!stdout(&o).contains("{\"tool_calls\""), "-n {n}");
    }
    let o = run(&[
        "--tools",
        tools,
        "--tool-choice",
        "required",
        "-n",
        "80",
        ask,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("{\"tool_calls\""), "{}", stdout(&o));
    // A text answer (`auto`) cut by -n is only a short answer.
    let o = run(&["--tools", tools, "-n", "3", "Say hi."]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    for f in [&schema_file, &tools_file] {
        let _ = std::fs::remove_file(f);
    }
}

/// `--chat-template-kwargs` takes a JSON object (a clear usage error otherwise) and
/// an answer is given with it.
#[test]
fn chat_template_kwargs_must_be_a_json_object() {
    let Some(m) = model() else { return };
    for (bad, why) in [("[1]", "expected a JSON object"), ("{oops", "not JSON")] {
        let o = thaw(&["run", &m, "--chat-template-kwargs", bad, "hi"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("--chat-template-kwargs") && err.contains(why),
            "{err}"
        );
    }
    let out = thaw_ok(&[
        "run",
        &m,
        "--chat-template-kwargs",
        r#"{"enable_thinking": false}"#,
        "--temperature",
        "0",
        "-n",
        "4",
        "Say hi.",
    ]);
    assert!(!out.trim().is_empty());
}
