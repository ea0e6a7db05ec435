//! Debug helper: rewrite a GGUF with every tensor dequantized to F32, so the forward
//! pass can be checked against a float64 reference without quantization noise.
use thaw_gguf::{GgufFile, writer::GgufWriter};
fn main() {
    let mut a = std::env::args().skip(1);
    let f = GgufFile::open(a.next().unwrap()).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        if k != "general.alignment" {
            w.kv(k.clone(), v.clone());
        }
    }
    for t in f.tensors() {
        let cols = t.dims[0] as usize;
        let n = t.n_elements() as usize;
        let mut out = vec![0.0f32; n];
        let data = f.tensor_data(t);
        let rb = data.len() / (n / cols);
        for (r, dst) in out.chunks_exact_mut(cols).enumerate() {
            thaw_kernels::dequantize_row(t.ty, &data[r * rb..(r + 1) * rb], dst);
        }
        w.tensor_f32(t.name.clone(), &t.dims, &out);
    }
    w.write_to(a.next().unwrap()).unwrap();
}
