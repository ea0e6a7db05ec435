//! The real models on disk. Expected values come from an independent Python parse of
//! the files and from the model cards, not from this crate. Skipped (with a reason on
//! stderr) when a model is not in the cache.

mod common;

use thaw_gguf::{GgmlType, GgufFile, Value};

#[test]
fn smollm2_header() {
    let Some(path) = common::model_path("smollm2") else {
        return;
    };
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.get_u64("llama.block_count").unwrap(), 30);
    assert_eq!(f.get_u64("llama.embedding_length").unwrap(), 576);
    assert_eq!(f.get_u64("llama.attention.head_count").unwrap(), 9);
    assert_eq!(f.get_u64("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(f.get_f32("llama.rope.freq_base").unwrap(), 100_000.0);
    assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    assert_eq!(f.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    assert!(!f.get_bool("tokenizer.ggml.add_bos_token").unwrap());
    assert_eq!(f.metadata().len(), 33);
    assert_eq!(f.metadata()[0].0, "general.architecture");

    let tokens = f.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 49_152);
    assert_eq!(tokens[1], "<|im_start|>");
    assert_eq!(tokens[2], "<|im_end|>");
    assert_eq!(f.get_array("tokenizer.ggml.merges").unwrap().len(), 48_900);
    assert_eq!(
        f.get("tokenizer.ggml.tokens").unwrap().to_string(),
        "[string × 49152]"
    );

    assert_eq!(f.alignment(), 32);
    assert_eq!(f.data_offset(), 1_785_664);
    assert_eq!(f.tensors().len(), 272);
    let count = |ty| f.tensors().iter().filter(|t| t.ty == ty).count();
    assert_eq!(
        (
            count(GgmlType::Q4_1),
            count(GgmlType::F32),
            count(GgmlType::Q8_0)
        ),
        (210, 61, 1)
    );
    assert!(
        f.tensor_info("output.weight").is_none(),
        "output is tied to the embedding"
    );

    let emb = f.tensor("token_embd.weight").unwrap();
    assert_eq!(emb.ty, GgmlType::Q8_0);
    assert_eq!(emb.dims, [576, 49_152]);
    assert_eq!(emb.offset, 1_785_664);
    assert_eq!(emb.size, 49_152 * 576 / 32 * 34);
    assert_eq!(f.tensor_data(emb).len() as u64, emb.size);

    let norm = f.tensor("output_norm.weight").unwrap();
    assert_eq!(
        (norm.ty, norm.offset, norm.size),
        (GgmlType::F32, 1_785_664 + 96_574_464, 576 * 4)
    );
    let gains: Vec<f32> = f
        .tensor_data(norm)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!(gains.iter().all(|g| g.is_finite() && *g != 0.0));

    // Tensor data tiles the data section in order without overlapping.
    let file_len = std::fs::metadata(&path).unwrap().len();
    let mut spans: Vec<_> = f
        .tensors()
        .iter()
        .map(|t| (t.offset, t.offset + t.size))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0);
    }
    assert!(spans.last().unwrap().1 <= file_len);
}

#[test]
fn gemma3_header() {
    let Some(path) = common::model_path("gemma3-270m") else {
        return;
    };
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.architecture().unwrap(), "gemma3");
    assert_eq!(f.get_u64("gemma3.block_count").unwrap(), 18);
    assert_eq!(f.get_u64("gemma3.embedding_length").unwrap(), 640);
    assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "llama");
    assert_eq!(f.get_array("tokenizer.ggml.tokens").unwrap().len(), 262_144);
    assert!(matches!(
        f.get_array("tokenizer.ggml.scores").unwrap()[0],
        Value::F32(_)
    ));
    assert_eq!(f.tensors().len(), 236);
    assert_eq!(f.data_offset(), 6_525_120);
    let count = |ty| f.tensors().iter().filter(|t| t.ty == ty).count();
    assert_eq!(
        [
            GgmlType::F32,
            GgmlType::Q5_0,
            GgmlType::Q4K,
            GgmlType::Q8_0,
            GgmlType::Q6K
        ]
        .map(count),
        [109, 81, 27, 10, 9]
    );
    let emb = f.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (emb.ty, emb.dims.as_slice()),
        (GgmlType::Q8_0, &[640u64, 262_144][..])
    );
    assert_eq!(emb.offset, 6_525_120 + 2560);
}
