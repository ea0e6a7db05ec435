//! Behaviour on the two real models: known ids, BOS/EOS rules, special tokens,
//! end-of-generation, byte pieces, round trips and streaming.

mod common;

use thaw_tokenizer::{ModelKind, StreamDecoder, Tokenizer};

const SAMPLES: &[&str] = &[
    "Hello world",
    "  leading and trailing  ",
    "tabs\tand\nnewlines\r\n",
    "naïve café — Ελληνικά, русский, 中文, العربية, हिन्दी",
    "emoji 👨‍👩‍👧‍👦 👍🏽 🇯🇵",
    "fn main() { println!(\"{}\", 1 << 20); }",
    "<|im_start|>user\nhi<|im_end|> <start_of_turn>model",
    "12345678901234567890",
    "",
];

fn roundtrip_all(tok: &Tokenizer) {
    let mut lines = common::corpus();
    lines.extend(SAMPLES.iter().map(|s| s.to_string()));
    for line in &lines {
        for special in [false, true] {
            let ids = tok.encode(line, false, special).unwrap();
            assert_eq!(
                &tok.decode(&ids, false),
                line,
                "round trip (parse_special={special})"
            );
        }
    }
}

fn stream_matches_decode(tok: &Tokenizer) {
    let mut held_back = 0;
    for text in SAMPLES.iter().copied().chain(["ｶﾀｶﾅ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ✓✓✓ 🙂🙃"])
    {
        let ids = tok.encode(text, false, false).unwrap();
        let mut dec = StreamDecoder::new(false);
        let mut out = String::new();
        for &id in &ids {
            let chunk = dec.push(tok, id);
            assert!(
                !chunk.contains('\u{FFFD}'),
                "partial character leaked in {text:?}"
            );
            if chunk.is_empty() && !tok.token_bytes(id).is_empty() {
                held_back += 1;
            }
            out.push_str(&chunk);
        }
        out.push_str(&dec.finish());
        assert_eq!(out, text);
    }
    assert!(
        held_back > 0,
        "no token was split mid-character: the test proves nothing"
    );
}

#[test]
fn smollm2_basics() {
    let Some((_g, tok)) = common::load("smollm2") else {
        return;
    };
    assert_eq!(tok.kind(), ModelKind::ByteLevelBpe);
    assert_eq!(tok.vocab_size(), 49152);
    assert!(tok.notes().is_empty(), "{:?}", tok.notes());

    let ids = tok.encode("Hello world", false, false).unwrap();
    let texts: Vec<&str> = ids.iter().map(|&i| tok.token_text(i)).collect();
    assert_eq!(texts, ["Hello", "Ġworld"]);
    assert_eq!(tok.token_bytes(ids[1]), b" world");
    // smollm splits digits one by one.
    assert_eq!(tok.encode("2026", false, false).unwrap().len(), 4);

    // add_bos_token = false: add_special adds nothing here.
    assert!(!tok.add_bos());
    assert_eq!(tok.encode("Hello world", true, false).unwrap(), ids);
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(2)));
    assert_eq!(tok.token_text(1), "<|im_start|>");

    let s = "<|im_start|>user\nHi<|im_end|>";
    let with = tok.encode(s, false, true).unwrap();
    assert_eq!(with.first(), Some(&1));
    assert_eq!(with.last(), Some(&2));
    let without = tok.encode(s, false, false).unwrap();
    assert!(!without.contains(&1) && !without.contains(&2));
    assert_eq!(tok.decode(&with, true), "user\nHi");
    assert_eq!(tok.decode(&with, false), s);

    assert!(tok.is_eog(2), "<|im_end|>");
    assert!(tok.is_eog(0), "<|endoftext|>");
    assert!(!tok.is_eog(1));
    assert!(!tok.is_eog(ids[0]));
    assert_eq!(tok.token_text(999_999), "");
    assert!(tok.token_bytes(999_999).is_empty());
}

#[test]
fn gemma3_basics() {
    let Some((_g, tok)) = common::load("gemma3-270m") else {
        return;
    };
    assert_eq!(tok.kind(), ModelKind::SentencePiece);
    assert_eq!(tok.vocab_size(), 262_144);

    let ids = tok.encode("Hello world", false, false).unwrap();
    let texts: Vec<&str> = ids.iter().map(|&i| tok.token_text(i)).collect();
    assert_eq!(
        texts,
        ["Hello", "▁world"],
        "add_space_prefix is false for Gemma"
    );
    assert_eq!(tok.token_bytes(ids[1]), b" world");

    // add_bos_token = true.
    assert!(tok.add_bos());
    assert_eq!(tok.bos_id(), Some(2));
    let with_bos = tok.encode("Hello world", true, false).unwrap();
    assert_eq!(with_bos[0], 2);
    assert_eq!(&with_bos[1..], &ids[..]);
    assert_eq!(tok.encode("", true, false).unwrap(), vec![2]);
    assert_eq!(tok.decode(&with_bos, true), "Hello world");

    // Newlines and space runs are user-defined tokens: always matched.
    let nl = tok.token_id("\n").unwrap();
    assert_eq!(tok.encode("a\nb", false, false).unwrap()[1], nl);
    // Control tokens only with parse_special.
    let sot = tok.token_id("<start_of_turn>").unwrap();
    assert_eq!(
        tok.encode("<start_of_turn>", false, true).unwrap(),
        vec![sot]
    );
    assert!(tok.encode("<start_of_turn>", false, false).unwrap().len() > 1);

    // Characters missing from the vocabulary fall back to <0xXX> byte tokens.
    let b = tok.token_id("<0x00>").unwrap();
    assert_eq!(tok.token_bytes(b), vec![0u8]);
    assert_eq!(tok.encode("\u{0}", false, false).unwrap(), vec![b]);

    let eot = tok.eot_id().unwrap();
    assert_eq!(tok.token_text(eot), "<end_of_turn>");
    assert!(tok.is_eog(eot) && tok.is_eog(tok.eos_id().unwrap()));
    assert!(!tok.is_eog(sot));
}

#[test]
fn smollm2_roundtrip_and_stream() {
    let Some((_g, tok)) = common::load("smollm2") else {
        return;
    };
    roundtrip_all(&tok);
    stream_matches_decode(&tok);
}

#[test]
fn gemma3_roundtrip_and_stream() {
    let Some((_g, tok)) = common::load("gemma3-270m") else {
        return;
    };
    roundtrip_all(&tok);
    stream_matches_decode(&tok);
}

/// Generated text continues a prompt: the first generated token's leading space (▁)
/// is real output and must not be stripped (models with `add_space_prefix` strip it
/// when decoding a text from its start).
#[test]
fn continuation_keeps_the_leading_space_of_the_first_token() {
    let Some((_g, tok)) = common::load("gemma3-270m") else {
        return;
    };
    let ids = tok.encode(" Paris", false, false).unwrap();
    assert!(tok.token_bytes(ids[0]).starts_with(b" "), "{ids:?}");
    let mut cont = StreamDecoder::continuation(false);
    let mut text: String = ids.iter().map(|&id| cont.push(&tok, id)).collect();
    text.push_str(&cont.finish());
    assert_eq!(text, " Paris");
}

/// Freezing is lossless (the thawed tokenizer freezes to the same bytes and encodes
/// alike) and a damaged frozen tokenizer is an error, never a panic.
fn frozen_roundtrip(tok: &Tokenizer) {
    let bytes = tok.to_frozen();
    let thawed = Tokenizer::from_frozen(&bytes).expect("thaw");
    assert_eq!(thawed.to_frozen(), bytes, "freeze ∘ thaw is the identity");
    for text in SAMPLES {
        assert_eq!(
            thawed.encode(text, true, true).unwrap(),
            tok.encode(text, true, true).unwrap()
        );
    }
    assert_eq!(thawed.eog_ids(), tok.eog_ids());
    for cut in [0, 7, 12, 60, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            Tokenizer::from_frozen(&bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    // Read in place from a larger buffer (as from a snapshot's mapping): the same
    // tokenizer, and damage is still an error.
    let at = 64;
    let mut file = vec![0u8; at];
    file.extend_from_slice(&bytes);
    file.extend_from_slice(&[0xAA; 16]);
    let keep: thaw_tokenizer::Backing = std::sync::Arc::new(file);
    let mapped = Tokenizer::from_frozen_in(&keep, at..at + bytes.len()).expect("thaw in place");
    assert_eq!(
        mapped.to_frozen(),
        bytes,
        "in place: freeze ∘ thaw is the identity"
    );
    for text in SAMPLES {
        assert_eq!(
            mapped.encode(text, true, true).unwrap(),
            tok.encode(text, true, true).unwrap()
        );
    }
    for cut in [0, 12, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            Tokenizer::from_frozen_in(&keep, at..at + cut).is_err(),
            "in place, cut at {cut}"
        );
    }
    assert!(
        Tokenizer::from_frozen_in(&keep, at..at + bytes.len() + 1).is_err(),
        "in place, trailing"
    );
    assert!(
        Tokenizer::from_frozen_in(&keep, at..at + bytes.len() + 99).is_err(),
        "past the end"
    );
    // Format 1 (no merge index, unpadded) is still read, and refreezes as the current one.
    let v1 = tok.to_frozen_version(1);
    assert_ne!(v1, bytes);
    let old = Tokenizer::from_frozen(&v1).expect("thaw format 1");
    assert_eq!(old.to_frozen(), bytes);
    for text in SAMPLES {
        assert_eq!(
            old.encode(text, true, true).unwrap(),
            tok.encode(text, true, true).unwrap()
        );
    }
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(Tokenizer::from_frozen(&extra).is_err(), "trailing byte");
    let mut unknown_flag = bytes.clone();
    unknown_flag[16] ^= 0xf0;
    assert!(
        Tokenizer::from_frozen(&unknown_flag).is_err(),
        "unknown flag bits"
    );
    let mut wrong_version = bytes.clone();
    wrong_version[8] ^= 0xff;
    let err = Tokenizer::from_frozen(&wrong_version).err().unwrap();
    assert!(err.to_string().contains("rebuild"), "{err}");
}

#[test]
fn smollm2_frozen_roundtrip() {
    if let Some((_g, tok)) = common::load("smollm2") {
        frozen_roundtrip(&tok);
    }
}

#[test]
fn gemma3_frozen_roundtrip() {
    if let Some((_g, tok)) = common::load("gemma3-270m") {
        frozen_roundtrip(&tok);
    }
}

/// A stored prompt prefix (the common ids of two chats with the same system message,
/// as `thaw snapshot build --prefix` stores it) reused by `encode_with_known`: the ids
/// are `encode`'s for any continuation, and the reuse reaches at least its last special token.
fn known_prefix_reuse_matches_encode(tok: &Tokenizer, open: &str, close: &str) {
    let sys = format!(
        "{open}system\nYou are a careful assistant. Rules:\n1. Be brief.\n2. Cite units.{close}\n{open}user\n"
    );
    let mut lines = common::corpus();
    lines.extend(SAMPLES.iter().map(|s| s.to_string()));
    for add_special in [false, true] {
        let enc = |t: &str| tok.encode(t, add_special, true).unwrap();
        let (a, b) = (enc(&format!("{sys}Hello")), enc(&format!("{sys}What")));
        let n = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        let known = &a[..n];
        let other = enc(&format!("{open}system\nSomething else entirely.{close}\n"));
        let last_special = known
            .iter()
            .rposition(|&id| tok.token_text(id) == open)
            .expect("the prefix holds the user turn's opening token");
        for line in &lines {
            let text = format!("{sys}{line}{close}\n{open}assistant\n");
            let (got, reused) = tok
                .encode_with_known(&text, add_special, true, &[&other, known])
                .unwrap();
            assert_eq!(got, enc(&text), "{line:?}");
            // User-defined tokens (Gemma's whitespace runs) are fragments of their own
            // and may carry the reuse past the opening token.
            assert!(
                (last_special + 1..=n).contains(&reused),
                "{line:?}: {reused}"
            );
        }
        // Texts that leave the prefix early, or never share it: the same ids as ever.
        for text in [
            format!("{open}system\nYou are a careful{close}\n{open}user\nHi"),
            format!("{open}system\nYou are a careful assistant. Rules:\n1. Be brief."),
            "no special tokens at all".to_string(),
            String::new(),
        ] {
            let (got, _) = tok
                .encode_with_known(&text, add_special, true, &[known])
                .unwrap();
            assert_eq!(got, enc(&text), "{text:?}");
        }
    }
}

#[test]
fn smollm2_reuses_a_known_prefix() {
    if let Some((_g, tok)) = common::load("smollm2") {
        known_prefix_reuse_matches_encode(&tok, "<|im_start|>", "<|im_end|>");
    }
}

#[test]
fn gemma3_reuses_a_known_prefix() {
    if let Some((_g, tok)) = common::load("gemma3-270m") {
        known_prefix_reuse_matches_encode(&tok, "<start_of_turn>", "<end_of_turn>");
    }
}
