//! Per-token cost of constrained decoding on a real vocabulary: feeds a fixed valid
//! output token by token and times `Constraint::mask` (mask computation + applying it
//! to the logits) and `commit`; then again with a token budget just above the
//! output's length, so every step also pays for wrap-up's dry runs.
//!
//! cargo run --release -p thaw-constrain --example mask_cost [-- MODEL]

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use thaw_constrain::{Constrainer, ToolFormat, ToolSpec};
use thaw_gguf::GgufFile;
use thaw_tokenizer::Tokenizer;

fn main() -> anyhow::Result<()> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "smollm2".into());
    let gguf = GgufFile::open(thaw_hub::ensure_model(&name)?)?;
    let tok = Arc::new(Tokenizer::from_gguf(&gguf)?);
    let t = Instant::now();
    let cons = Constrainer::new(tok.clone())?;
    println!(
        "{name}: vocab {}, constrainer built in {:.0} ms",
        tok.vocab_size(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let schema = json!({"type": "object", "properties": {
        "name": {"type": "string"}, "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}},
        "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string"}}}},
        "required": ["name", "age"]});
    let json_text = "{\"name\": \"Ada Lovelace\", \"age\": 36, \"tags\": [\"a\", \"c\"], \"address\": {\"city\": \"London\", \"zip\": \"W1\"}}";
    let tools = vec![ToolSpec {
        name: "get_weather".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}),
    }];
    let call_text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>";
    let cases = [
        ("json_schema", cons.json_schema(&schema)?, json_text),
        (
            "tool call (Hermes)",
            cons.lark(&ToolFormat::Hermes.grammar(&tools, true, |_| None))?,
            call_text,
        ),
    ];
    for ((label, c0, text), tight) in cases.iter().flat_map(|c| [(c, false), (c, true)]) {
        let ids = tok.encode(text, false, false)?;
        let mut times = Vec::new();
        for _round in 0..5 {
            let mut c = c0.clone();
            for (k, &id) in ids.iter().enumerate() {
                let mut logits = vec![0.0f32; tok.vocab_size()];
                let budget = tight.then(|| ids.len() + 8 - k);
                let t = Instant::now();
                c.mask_within(&mut logits, budget)?;
                c.commit(id)?;
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        let label = format!("{label}{}", if tight { ", tight budget" } else { "" });
        times.sort_by(f64::total_cmp);
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        println!(
            "{label}: {} tokens x5: mask+commit per token mean {mean:.0} us, p50 {:.0} us, p90 {:.0} us, max {:.0} us",
            ids.len(),
            times[times.len() / 2],
            times[times.len() * 9 / 10],
            times[times.len() - 1]
        );
    }
    Ok(())
}
