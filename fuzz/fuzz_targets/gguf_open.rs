//! Any byte string either parses into a file whose views all lie inside it, or is an
//! error; never a panic, an out-of-bounds view or an allocation out of proportion to
//! the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use thaw_gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes("fuzz.gguf", data) else { return };
    let len = data.len() as u64;
    for t in f.tensors() {
        assert!(t.offset >= f.data_offset());
        assert!(t.offset + t.size <= len);
        assert_eq!(f.tensor_data(t).len() as u64, t.size);
        assert!(f.tensor_info(&t.name).is_some_and(|got| std::ptr::eq(got, t)));
    }
    for (k, v) in f.metadata() {
        // Same entry, not just an equal value (NaN != NaN).
        assert!(f.get(k).is_some_and(|got| std::ptr::eq(got, v)));
        let _ = v.to_string();
    }
});
