//! A tokenizer frozen into flat bytes (a snapshot's TOKENIZER section) and thawed back
//! without rebuilding anything proportional to the vocabulary: token texts are one
//! byte string plus offsets (UTF-8 checked per token when read, not all at thaw), scores/attributes are arrays, and the text -> id hash index
//! and the BPE merge table are stored as built. Thawing is bounds-checked copies.
//!
//! Layout (little-endian): magic `THAWTOK\0`, version u32, kind u32, flags u32
//! (add_bos, add_eos, add_space_prefix, ignore_merges), six ids u32 (BOS, EOS, EOT,
//! EOM, UNK, PAD; `u32::MAX` = none), then length-prefixed (u32) fields: the
//! pre-tokenizer name, token offsets (n + 1 × u32), token texts, scores (n × f32),
//! attributes (n × u8), end-of-generation ids, hash-index slots, merges
//! (3 × u32 each: left, right, merged, in rank order) and build notes.

use crate::TokenizerError;
use crate::bpe::Bpe;
use crate::index::TokenIndex;
use crate::vocab::{ModelKind, Texts, Vocab};

const MAGIC: &[u8; 8] = b"THAWTOK\0";
/// Bumped whenever the layout or the meaning of a field changes.
const VERSION: u32 = 1;
const NONE: u32 = u32::MAX;

struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn u32s(&mut self, v: impl ExactSizeIterator<Item = u32>) {
        self.u32(v.len() as u32);
        for x in v {
            self.u32(x);
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

fn bad(what: impl Into<String>) -> TokenizerError {
    TokenizerError::Invalid(format!("frozen tokenizer: {}", what.into()))
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], TokenizerError> {
        if self.b.len() < n {
            return Err(bad(format!("truncated in {what}")));
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Ok(head)
    }
    fn u32(&mut self, what: &str) -> Result<u32, TokenizerError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn bytes(&mut self, what: &str) -> Result<&'a [u8], TokenizerError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    /// `count` u32s (length-prefixed, `elems` per entry).
    fn u32s(&mut self, elems: usize, what: &str) -> Result<Vec<u32>, TokenizerError> {
        let n = self.u32(what)? as usize;
        let b = self.take(n.checked_mul(4 * elems).ok_or_else(|| bad(what))?, what)?;
        Ok(b.chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }
    fn string(&mut self, what: &str) -> Result<String, TokenizerError> {
        let b = self.bytes(what)?;
        String::from_utf8(b.to_vec()).map_err(|_| bad(format!("{what} is not UTF-8")))
    }
}

/// Everything [`thaw`] restores.
pub(crate) struct Thawed {
    pub vocab: Vocab,
    pub index: TokenIndex,
    pub bpe: Option<Bpe>,
    pub notes: Vec<String>,
}

pub(crate) fn freeze(
    v: &Vocab,
    index: &TokenIndex,
    bpe: Option<&Bpe>,
    notes: &[String],
) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(
        v.tokens.blob.len() + v.tokens.len() * 9 + 1024,
    ));
    w.0.extend_from_slice(MAGIC);
    w.u32(VERSION);
    w.u32(match v.kind {
        ModelKind::ByteLevelBpe => 1,
        ModelKind::SentencePiece => 2,
    });
    let flags = u32::from(v.add_bos)
        | u32::from(v.add_eos) << 1
        | u32::from(v.add_space_prefix) << 2
        | u32::from(v.ignore_merges) << 3;
    w.u32(flags);
    for id in [v.bos, v.eos, v.eot, v.eom, v.unk, v.pad] {
        w.u32(id.unwrap_or(NONE));
    }
    w.bytes(v.pre.as_bytes());
    w.u32s(v.tokens.offsets.iter().copied());
    w.bytes(&v.tokens.blob);
    w.u32s(v.scores.iter().map(|s| s.to_bits()));
    w.bytes(&v.attrs);
    w.u32s(v.eog.iter().copied());
    w.u32s(index.slots.iter().copied());
    let merges = bpe.map_or(&[][..], |b| &b.merges[..]);
    w.u32(merges.len() as u32);
    for m in merges {
        for x in m {
            w.u32(*x);
        }
    }
    w.u32(notes.len() as u32);
    for n in notes {
        w.bytes(n.as_bytes());
    }
    w.0
}

pub(crate) fn thaw(b: &[u8]) -> Result<Thawed, TokenizerError> {
    let mut r = Reader { b };
    if r.take(8, "magic")? != MAGIC {
        return Err(bad("bad magic"));
    }
    let version = r.u32("version")?;
    if version != VERSION {
        return Err(bad(format!(
            "format {version}, this thaw reads {VERSION}; rebuild the snapshot"
        )));
    }
    let kind = match r.u32("kind")? {
        1 => ModelKind::ByteLevelBpe,
        2 => ModelKind::SentencePiece,
        k => return Err(bad(format!("unknown tokenizer kind {k}"))),
    };
    let flags = r.u32("flags")?;
    let mut ids = [None; 6];
    for id in &mut ids {
        let x = r.u32("special ids")?;
        *id = (x != NONE).then_some(x);
    }
    let pre = r.string("pre-tokenizer name")?;
    let offsets = r.u32s(1, "token offsets")?;
    let blob = r.bytes("token texts")?.to_vec();
    let tokens = Texts::from_frozen(blob, offsets)?;
    let n = tokens.len();
    if n == 0 {
        return Err(bad("empty vocabulary"));
    }
    let scores: Vec<f32> = r
        .u32s(1, "scores")?
        .into_iter()
        .map(f32::from_bits)
        .collect();
    let attrs = r.bytes("attributes")?.to_vec();
    let eog = r.u32s(1, "end-of-generation ids")?;
    let slots = r.u32s(1, "index")?;
    let merges_flat = r.u32s(3, "merges")?;
    let n_notes = r.u32("notes")?;
    let notes = (0..n_notes)
        .map(|_| r.string("notes"))
        .collect::<Result<Vec<_>, _>>()?;
    if !r.b.is_empty() {
        return Err(bad("trailing bytes"));
    }
    let in_range = |x: &u32| (*x as usize) < n;
    if scores.len() != n || attrs.len() != n {
        return Err(bad("scores or attributes do not match the vocabulary"));
    }
    if !ids.iter().flatten().all(in_range) || !eog.iter().all(in_range) {
        return Err(bad("a special token id is out of range"));
    }
    if !merges_flat.iter().all(in_range) {
        return Err(bad("a merge names a token out of range"));
    }
    let index = TokenIndex::from_slots(slots, n)
        .ok_or_else(|| bad("the hash index does not fit the vocabulary"))?;
    let ignore_merges = flags & 8 != 0;
    let bpe = (kind == ModelKind::ByteLevelBpe).then(|| {
        let merges = merges_flat
            .chunks_exact(3)
            .map(|c| [c[0], c[1], c[2]])
            .collect();
        Bpe::new(merges, ignore_merges)
    });
    let [bos, eos, eot, eom, unk, pad] = ids;
    let vocab = Vocab {
        kind,
        pre,
        tokens,
        scores,
        attrs,
        bos,
        eos,
        eot,
        eom,
        unk,
        pad,
        add_bos: flags & 1 != 0,
        add_eos: flags & 2 != 0,
        add_space_prefix: flags & 4 != 0,
        ignore_merges,
        eog,
    };
    Ok(Thawed {
        vocab,
        index,
        bpe,
        notes,
    })
}
