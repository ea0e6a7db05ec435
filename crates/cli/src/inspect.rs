//! `thaw inspect`: what is in a model file.

use anyhow::Result;
use clap::Args;
use thaw_gguf::{GgufFile, Value};

#[derive(Args)]
pub struct InspectArgs {
    /// Model name, .gguf or .thaw path, or hf:ORG/REPO/FILE.gguf.
    pub model: String,
    /// Also list every tensor.
    #[arg(long)]
    pub tensors: bool,
}

pub fn inspect(args: InspectArgs) -> Result<()> {
    let path = thaw_hub::resolve(&args.model)?;
    // A snapshot's GGUF section: the source's metadata (without the tokenizer
    // arrays) and its tensors in the kernels' layout.
    let snapshot = thaw_snapshot::is_snapshot(&path);
    let file = if snapshot {
        thaw_snapshot::Snapshot::open(&path)?.gguf()?
    } else {
        GgufFile::open(&path)?
    };
    println!("file: {}", path.display());
    if snapshot {
        println!(
            "snapshot: its embedded GGUF is shown (tokenizer arrays are in its TOKENIZER \
             section); `thaw snapshot inspect {}` shows the sections",
            path.display()
        );
    }
    println!(
        "GGUF v{}, {} metadata keys, {} tensors, data at byte {} (alignment {})",
        file.version(),
        file.metadata().len(),
        file.tensors().len(),
        file.data_offset(),
        file.alignment()
    );
    for (key, value) in file.metadata() {
        println!("  {key} = {}", summarize(value));
    }
    let mut by_type = std::collections::BTreeMap::<String, (usize, u64)>::new();
    for t in file.tensors() {
        let e = by_type.entry(t.ty.name()).or_default();
        e.0 += 1;
        e.1 += t.size;
    }
    println!("tensor types:");
    for (ty, (n, bytes)) in by_type {
        println!(
            "  {ty:<6} {n:>4} tensors {:>10}",
            crate::models::human_size(bytes)
        );
    }
    if args.tensors {
        for t in file.tensors() {
            println!("  {:<40} {:<6} {:?}", t.name, t.ty.name(), t.dims);
        }
    }
    Ok(())
}

fn summarize(v: &Value) -> String {
    match v {
        Value::String(s) if s.len() > 80 => {
            let cut: String = s.chars().take(60).collect();
            format!("{cut:?}… ({} bytes)", s.len())
        }
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) if items.len() > 8 => {
            let kind = items.first().map(type_name).unwrap_or("empty");
            format!("[{kind} × {}]", items.len())
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(summarize).collect();
            format!("[{}]", parts.join(", "))
        }
        other => format!("{other:?}")
            .split_once('(')
            .map(|(_, rest)| rest.trim_end_matches(')').to_string())
            .unwrap_or_default(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::U8(_) => "u8",
        Value::I8(_) => "i8",
        Value::U16(_) => "u16",
        Value::I16(_) => "i16",
        Value::U32(_) => "u32",
        Value::I32(_) => "i32",
        Value::U64(_) => "u64",
        Value::I64(_) => "i64",
        Value::F32(_) => "f32",
        Value::F64(_) => "f64",
        Value::Bool(_) => "bool",
        Value::String(_) => "string",
        Value::Array(_) => "array",
    }
}
