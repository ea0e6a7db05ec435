//! Prompt prefixes stored in a snapshot: a session whose prompt starts with one
//! copies its K/V in instead of computing it, and the result is identical to
//! computing it (the same prefix-then-rest computation a warm session does).

use std::path::PathBuf;

use thaw_engine::{Engine, LoadOptions, PrefixSpec, SnapshotOptions, build_snapshot};

fn model(name: &str) -> Option<PathBuf> {
    match thaw_hub::ensure_model(name) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("skipped: model {name} unavailable: {e}");
            None
        }
    }
}

fn logits_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn check(name: &str) {
    let Some(gguf) = model(name) else { return };
    let dir = std::env::temp_dir().join(format!("thaw-prefix-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let snap = dir.join("p.thaw");
    let system = "You are a careful assistant for a bakery. Keep answers short and friendly.";
    let raw = "Once upon a time, in a small village by the sea,";
    let opts = SnapshotOptions {
        prefixes: vec![
            PrefixSpec::System(system.into()),
            PrefixSpec::Raw(raw.into()),
            PrefixSpec::ChatPreamble,
        ],
        threads: 1,
        ..Default::default()
    };
    build_snapshot(&gguf, &snap, &opts).unwrap();
    let load = LoadOptions { threads: 1 };
    let thawed = Engine::load(&snap, &load).unwrap();
    let reference = Engine::load(&gguf, &load).unwrap();
    let stored = thawed.prefixes();
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[0].0, system);
    assert_eq!(stored[2].0, thaw_engine::CHAT_PREAMBLE_LABEL);
    let preamble = reference.chat_preamble_tokens().unwrap();
    assert!(preamble.len() >= 2, "the template writes a preamble");
    assert_eq!(stored[2].1, preamble);
    let user_only = |e: &Engine, user: &str| {
        e.chat_tokens(
            &[serde_json::json!({"role": "user", "content": user})],
            true,
        )
        .unwrap()
    };
    assert!(reference.prefixes().is_empty());
    // The thawed engine takes the stored prefixes' ids for the chat text they cover
    // instead of tokenizing it again: the ids are the GGUF engine's, for chats that
    // start with a stored prefix, leave it part-way, or never meet it.
    let j = |role: &str, content: &str| serde_json::json!({"role": role, "content": content});
    for (sys, user) in [
        (Some(system), "Do you sell rye bread?"),
        (Some(system), ""),
        (
            Some(system),
            " leading space\nand <|im_start|> <start_of_turn> text",
        ),
        (Some("You are a careful assistant"), "Hi"),
        (Some(&system[..system.len() - 1]), "Hi"),
        (None, "Why is the sky blue?"),
    ] {
        let mut m: Vec<_> = sys.map(|s| j("system", s)).into_iter().collect();
        m.extend([
            j("user", user),
            j("assistant", "Sure."),
            j("user", "And more?"),
        ]);
        for n in [m.len() - 2, m.len()] {
            assert_eq!(
                thawed.chat_tokens(&m[..n], true).unwrap(),
                reference.chat_tokens(&m[..n], true).unwrap(),
                "{sys:?} {user:?} {n} messages"
            );
        }
    }

    let chat = |e: &Engine, user: &str| {
        e.chat_tokens(
            &[
                serde_json::json!({"role": "system", "content": system}),
                serde_json::json!({"role": "user", "content": user}),
            ],
            true,
        )
        .unwrap()
    };
    let sys_prefix = reference.system_prefix_tokens(system).unwrap();
    assert_eq!(stored[0].1, sys_prefix);
    let raw_prefix = reference.text_tokens(raw, true).unwrap();
    let cases = [
        chat(&thawed, "Do you sell rye bread?"),
        chat(&thawed, "1"),
        reference
            .text_tokens(&format!("{raw} there lived an old fisherman"), true)
            .unwrap(),
        // No system message: the stored preamble is used.
        user_only(&thawed, "Why is the sky blue?"),
        user_only(&thawed, "é"),
    ];
    for (i, prompt) in cases.iter().enumerate() {
        let prefix = match i {
            0 | 1 => &sys_prefix,
            2 => &raw_prefix,
            _ => &preamble,
        };
        assert!(
            prompt.starts_with(prefix),
            "case {i}: prompt starts with the prefix"
        );
        // Thawed: the stored K/V is adopted.
        let mut s = thawed.session(256).unwrap();
        let (got, reused) = s.prefill(prompt).unwrap();
        assert_eq!(reused, prefix.len(), "case {i}: stored prefix used");
        // ... in place, without copying its K/V.
        assert_eq!(
            s.stored_prefix_in_place(),
            prefix.len(),
            "case {i}: in place"
        );
        // Reference: the prefix computed first, then the rest.
        let mut r = reference.session(256).unwrap();
        r.prefill(prefix).unwrap();
        let (want, reused_ref) = r.prefill(prompt).unwrap();
        assert_eq!(reused_ref, prefix.len().min(prompt.len() - 1));
        assert!(logits_equal(&got, &want), "case {i}: logits differ");
        // And generation continues identically.
        let params = thaw_engine::GenerateParams {
            sampler: thaw_sampling::SamplerConfig {
                temperature: 0.0,
                ..Default::default()
            },
            max_tokens: Some(6),
            ..Default::default()
        };
        let (mut a, mut b) = (String::new(), String::new());
        let mut s = thawed.session(256).unwrap();
        let st = s
            .generate(prompt, &params, None, |t| a.push_str(t))
            .unwrap();
        assert_eq!(st.cached_tokens, prefix.len());
        let mut r = reference.session(256).unwrap();
        r.prefill(prefix).unwrap();
        r.generate(prompt, &params, None, |t| b.push_str(t))
            .unwrap();
        assert_eq!(a, b, "case {i}");
    }
    // A prompt that does not start with a stored prefix computes everything.
    let other = reference
        .text_tokens("Completely different text", true)
        .unwrap();
    let mut s = thawed.session(64).unwrap();
    assert_eq!(s.prefill(&other).unwrap().1, 0);
    // A prompt equal to the prefix still computes its last two tokens (the last one's
    // logits, with the prompt arithmetic of a pass of two or more).
    // (Rolling back into a prefix read in place copies what is kept of it.)
    let mut s = thawed.session(256).unwrap();
    let (l, reused) = s.prefill(&raw_prefix).unwrap();
    assert_eq!(reused, raw_prefix.len() - 2);
    assert_eq!(s.stored_prefix_in_place(), 0);
    let mut r = reference.session(256).unwrap();
    r.prefill(&raw_prefix[..raw_prefix.len() - 2]).unwrap();
    assert!(logits_equal(&l, &r.prefill(&raw_prefix).unwrap().0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn smollm2_stored_prefixes_match_computing_them() {
    check("smollm2");
}

#[test]
fn gemma3_stored_prefixes_match_computing_them() {
    check("gemma3-270m");
}

#[test]
fn an_empty_prefix_is_refused_without_a_rebuild_hint() {
    let Some(gguf) = model("smollm2") else { return };
    let dir = std::env::temp_dir().join(format!("thaw-empty-prefix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let snap = dir.join("e.thaw");
    let opts = SnapshotOptions {
        prefixes: vec![PrefixSpec::Raw(String::new())],
        ..Default::default()
    };
    let err = build_snapshot(&gguf, &snap, &opts).expect_err("an empty prefix");
    let msg = err.to_string();
    assert!(
        msg.contains("no tokens") && !msg.contains("rebuild"),
        "{msg}"
    );
    assert!(!snap.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
