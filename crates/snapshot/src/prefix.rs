//! The PREFIXES section: prompt prefixes (e.g. a deployment's chat system prompt)
//! with their token ids and the K/V state the model computed for them, so a request
//! that starts with one skips its prefill.
//!
//! Layout (little-endian): magic `THAWPFX\0`, version u32, count u32; then per prefix:
//! label length u32 + UTF-8 label, token count u32 + token ids (u32 each), K/V length
//! u64, zero padding to a multiple of 64 bytes from the section start, the K/V bytes
//! (the model's own export format, see `thaw_models::KvCache::export`), and padding to
//! 64 again. The section itself starts 2 MiB-aligned, so each K/V block is 64-aligned
//! in the mapping.

use std::ops::Range;

const MAGIC: &[u8; 8] = b"THAWPFX\0";
const VERSION: u32 = 1;
const ALIGN: usize = 64;

/// One prefix to store.
#[derive(Debug, Clone)]
pub struct PrefixInput {
    /// What the user gave (`--prefix` text or a chat system prompt), for `inspect`.
    pub label: String,
    pub tokens: Vec<u32>,
    pub kv: Vec<u8>,
}

/// One stored prefix; `kv` is a byte range of the snapshot's mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPrefix {
    pub label: String,
    pub tokens: Vec<u32>,
    pub kv: Range<usize>,
}

fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(ALIGN), 0);
}

/// Encode prefixes into a PREFIXES section.
pub fn encode_prefixes(prefixes: &[PrefixInput]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(prefixes.len() as u32).to_le_bytes());
    for p in prefixes {
        out.extend_from_slice(&(p.label.len() as u32).to_le_bytes());
        out.extend_from_slice(p.label.as_bytes());
        out.extend_from_slice(&(p.tokens.len() as u32).to_le_bytes());
        for t in &p.tokens {
            out.extend_from_slice(&t.to_le_bytes());
        }
        out.extend_from_slice(&(p.kv.len() as u64).to_le_bytes());
        pad(&mut out);
        out.extend_from_slice(&p.kv);
        pad(&mut out);
    }
    out
}

/// Bounds-checked reading position in a section.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<Range<usize>, String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| format!("truncated in {what}"))?;
        let r = self.at..end;
        self.at = end;
        Ok(r)
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let r = self.take(4, what)?;
        Ok(u32::from_le_bytes(self.b[r].try_into().expect("4 bytes")))
    }
    /// Skip the zero padding to the next multiple of [`ALIGN`].
    fn align(&mut self, what: &str) -> Result<(), String> {
        let gap = self.at.next_multiple_of(ALIGN) - self.at;
        self.take(gap, what).map(|_| ())
    }
}

/// Decode a PREFIXES section found at `base` in the mapping; `Err` says what is wrong.
pub(crate) fn decode_prefixes(b: &[u8], base: usize) -> Result<Vec<StoredPrefix>, String> {
    let mut c = Cursor { b, at: 0 };
    if b[c.take(8, "magic")?] != *MAGIC {
        return Err("bad magic".into());
    }
    let version = c.u32("version")?;
    if version != VERSION {
        return Err(format!("format {version}, this thaw reads {VERSION}"));
    }
    let count = c.u32("count")?;
    let mut out = Vec::new();
    for _ in 0..count {
        let n = c.u32("label")? as usize;
        let label = std::str::from_utf8(&b[c.take(n, "label")?])
            .map_err(|_| "label is not UTF-8".to_string())?
            .to_string();
        let n = c.u32("tokens")? as usize;
        let tokens = b[c.take(n.checked_mul(4).ok_or("token count")?, "tokens")?]
            .chunks_exact(4)
            .map(|x| u32::from_le_bytes(x.try_into().expect("4 bytes")))
            .collect();
        let r = c.take(8, "K/V length")?;
        let kv_len = usize::try_from(u64::from_le_bytes(b[r].try_into().expect("8 bytes")))
            .map_err(|_| "K/V length".to_string())?;
        c.align("padding")?;
        let kv = c.take(kv_len, "K/V")?;
        c.align("padding")?;
        out.push(StoredPrefix {
            label,
            tokens,
            kv: base + kv.start..base + kv.end,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_truncation() {
        let input = vec![
            PrefixInput {
                label: "sys".into(),
                tokens: vec![1, 2, 3],
                kv: (0..100u8).collect(),
            },
            PrefixInput {
                label: "ünï".into(),
                tokens: vec![],
                kv: vec![7; 3],
            },
        ];
        let bytes = encode_prefixes(&input);
        let got = decode_prefixes(&bytes, 4096).unwrap();
        assert_eq!(got.len(), 2);
        for (g, i) in got.iter().zip(&input) {
            assert_eq!(g.label, i.label);
            assert_eq!(g.tokens, i.tokens);
            assert_eq!(g.kv.start % ALIGN, 0);
            assert_eq!(&bytes[g.kv.start - 4096..g.kv.end - 4096], &i.kv[..]);
        }
        for cut in [0, 5, 12, 20, 40, bytes.len() / 2] {
            assert!(decode_prefixes(&bytes[..cut], 0).is_err(), "cut {cut}");
        }
        let mut v = bytes.clone();
        v[8] = 9;
        assert!(decode_prefixes(&v, 0).unwrap_err().contains("format 9"));
    }
}
