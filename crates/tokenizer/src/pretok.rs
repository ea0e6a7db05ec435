//! Pre-tokenizers for byte-level BPE, chosen by `tokenizer.ggml.pre`.
//!
//! The GGUF stores only the name; the split rules mirror llama.cpp's table in
//! llama-vocab.cpp (each rule splits every piece left by the previous one, keeping
//! both matches and the text between them), followed by GPT-2's byte-to-unicode map.

use tokenizers::SplitDelimiterBehavior;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};

use crate::TokenizerError;

/// GPT-2's split rule (the byte-level pre-tokenizer applies it when `use_regex` is set).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Mistral's tekken (Nemo, Small 3): words split at lower-to-upper case changes,
/// single digits. llama.cpp stands in for the Unicode case classes with "a letter that
/// is not ASCII a-z" (upper) and "not A-Z" (lower), and so does this.
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?(?:(?=\p{L})[^a-z])*(?:(?=\p{L})[^A-Z])+|[^\r\n\p{L}\p{N}]?(?:(?=\p{L})[^a-z])+(?:(?=\p{L})[^A-Z])*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GPT-4o's (o200k): tekken's words with English contractions attached, and digits
/// in groups of up to three.
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?(?:(?=\p{L})[^a-z])*(?:(?=\p{L})[^A-Z])+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?(?:(?=\p{L})[^a-z])+(?:(?=\p{L})[^A-Z])*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// DeepSeek LLM's (7B/67B): newlines alone, then letter runs of the Latin, Greek,
/// Cyrillic, Armenian, Georgian and other cased scripts (a leading space kept),
/// punctuation runs, trailing spaces, CJK runs and digit runs. The letter class is
/// the literal list from the model's tokenizer.json, as llama.cpp has it; the six
/// letters that Unicode normalization would replace (Greek Extended ones with Greek
/// or Latin singletons, Ohm and Kelvin signs) are written as `\x{…}` escapes so that
/// no editor or tool can turn a range end into a different code point.
const DEEPSEEK_LLM: &[&str] = &[
    r"[\r\n]",
    r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\x{1F7D}ᾀ-ᾴᾶ-ᾼ\x{1FBE}ῂ-ῄῆ-ῌῐ-\x{1FD3}ῖ-\x{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\x{2126}ℨ\x{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
    r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
    r"\s+$",
    r"[一-龥ࠀ-一가-퟿]+",
    r"\p{N}+",
];

/// DeepSeek Coder's: as DeepSeek LLM's with any letters and any punctuation, and
/// single digits.
const DEEPSEEK_CODER: &[&str] = &[
    r"[\r\n]",
    r"\s?\p{L}+",
    r"\s?\p{P}+",
    r"[一-龥ࠀ-一가-퟿]+",
    r"\p{N}",
];

/// DeepSeek V3's (also R1 and Hunyuan dense): digits in groups of up to three, CJK and
/// kana runs, then words that may start with one ASCII punctuation mark.
const DEEPSEEK_V3: &[&str] = &[
    r"\p{N}{1,3}",
    r"[一-龥぀-ゟ゠-ヿ]+",
    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
];

/// Seed-Coder's: Qwen 2's with single digits and no newlines in punctuation runs.
const SEED_CODER: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Poro's and BLOOM's: anything up to whitespace or sentence punctuation (the class
/// really holds `(`, `|` and `)` too, as written in their tokenizer.json).
const PORO: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";

/// The split rules for one pre-tokenizer name: regexes applied in order, and whether
/// GPT-2's own rule runs last (inside the byte-level step).
struct Rules {
    regexes: &'static [&'static str],
    gpt2_last: bool,
}

fn rules_for(pre: &str) -> Option<Rules> {
    let r = |regexes, gpt2_last| Some(Rules { regexes, gpt2_last });
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" | "dbrx" | "smaug-bpe" => {
            r(&[LLAMA3], false)
        }
        "qwen2" | "stablelm2" | "deepseek-r1-qwen" | "megrez" => r(&[QWEN2], false),
        "tekken" => r(&[TEKKEN], false),
        "deepseek-llm" => r(DEEPSEEK_LLM, false),
        "deepseek-coder" => r(DEEPSEEK_CODER, false),
        "deepseek-v3" | "hunyuan-dense" => r(DEEPSEEK_V3, false),
        "seed-coder" => r(&[SEED_CODER], false),
        "poro-chat" | "bloom" | "gpt3-finnish" => r(&[PORO], false),
        "viking" => r(&[PORO, r"\p{N}"], false),
        "hunyuan" => r(&[QWEN2], false),
        "gpt-4o" | "llama4" => r(&[GPT4O], false),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            r(&[r"\p{N}"], true)
        }
        "gpt2" | "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" | "jina-es" | "jina-de"
        | "jina-v1-en" | "jina-v2-es" | "jina-v2-de" | "jina-v2-code" | "roberta-bpe"
        | "gigachat" | "trillion" | "exaone4" => r(&[], true),
        // llama.cpp's "default" rule set (also used when the name is missing).
        "default" | "" => r(
            &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
            false,
        ),
        _ => None,
    }
}

/// Builds the pre-tokenizer for `pre`. Unknown names fall back to GPT-2 splitting and
/// return a note saying so.
pub(crate) fn build(pre: &str) -> Result<(PreTokenizerWrapper, Option<String>), TokenizerError> {
    let (rules, note) = match rules_for(pre) {
        Some(r) => (r, None),
        None => (
            rules_for("gpt2").expect("gpt2 rules exist"),
            Some(format!(
                "unknown pre-tokenizer `{pre}`: using GPT-2 splitting; token ids may differ from llama.cpp"
            )),
        ),
    };
    let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
    for re in rules.regexes {
        let split = Split::new(
            SplitPattern::Regex((*re).to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| TokenizerError::Build(format!("pre-tokenizer regex {re:?}: {e}")))?;
        steps.push(PreTokenizerWrapper::Split(split));
    }
    steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
        false,
        false,
        rules.gpt2_last,
    )));
    Ok((PreTokenizerWrapper::Sequence(Sequence::new(steps)), note))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

    fn pieces(pre: &str, text: &str) -> Vec<String> {
        let (p, _) = build(pre).unwrap();
        let mut s = PreTokenizedString::from(text);
        p.pre_tokenize(&mut s).unwrap();
        s.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(t, _, _)| t.to_string())
            .collect()
    }

    #[test]
    fn smollm_splits_digits_one_by_one() {
        assert_eq!(pieces("smollm", "ab 123"), vec!["ab", "Ġ", "1", "2", "3"]);
    }

    #[test]
    fn llama3_groups_digits_by_three() {
        assert_eq!(pieces("llama3", "12345"), vec!["123", "45"]);
    }

    #[test]
    fn unknown_name_gives_a_note() {
        let (_, note) = build("no-such-pre").unwrap();
        assert!(note.unwrap().contains("no-such-pre"));
        assert!(build("smollm").unwrap().1.is_none());
    }
}
