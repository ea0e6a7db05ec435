//! A tokenizer frozen into flat bytes (a snapshot's TOKENIZER section) and thawed back
//! without rebuilding or copying anything proportional to the vocabulary: token texts
//! are one byte string plus offsets (UTF-8 checked per token when read, not all at
//! thaw), scores and attributes are arrays, and the text -> id hash index and the BPE
//! merge table with its hash index are stored as built. Thawed from a snapshot's
//! mapping, the arrays are read where they lie; every length, offset, id and table
//! entry is checked first.
//!
//! Layout (little-endian): magic `THAWTOK\0`, version u32, kind u32, flags u32
//! (add_bos, add_eos, add_space_prefix, ignore_merges), six ids u32 (BOS, EOS, EOT,
//! EOM, UNK, PAD; `u32::MAX` = none), then fields, each a u32 count and its items: the
//! pre-tokenizer name (bytes), token offsets (n + 1 × u32), token texts (bytes),
//! scores (n × f32), attributes (n × u8), end-of-generation ids (u32), hash-index slots
//! (u32), merges (3 × u32 each: left, right, merged, in rank order), the merges' hash
//! slots (u32; version 2) and build notes (count, then each as bytes). In version 2
//! every byte field is zero-padded to a multiple of 4, so that the u32 arrays after it
//! stay aligned and can be viewed in place. Version 1 (no merge slots, no padding) is
//! still read, by copying.

use crate::TokenizerError;
use crate::bpe::Bpe;
use crate::index::TokenIndex;
use crate::shared::{Backing, Buf};
use crate::vocab::{ModelKind, Texts, Vocab};

const MAGIC: &[u8; 8] = b"THAWTOK\0";
/// Bumped whenever the layout or the meaning of a field changes.
const VERSION: u32 = 2;
/// The oldest version still read.
const OLDEST: u32 = 1;
const NONE: u32 = u32::MAX;

struct Writer {
    out: Vec<u8>,
    /// Byte fields padded to 4 (version 2).
    padded: bool,
}

impl Writer {
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.out.extend_from_slice(b);
        if self.padded {
            self.out.resize(self.out.len().next_multiple_of(4), 0);
        }
    }
    fn u32s(&mut self, v: impl ExactSizeIterator<Item = u32>) {
        self.u32(v.len() as u32);
        for x in v {
            self.u32(x);
        }
    }
}

/// Reads fields from `whole[at..end]`; arrays become views of `keep` (the bytes
/// `whole` is) when one is given.
struct Reader<'a> {
    whole: &'a [u8],
    at: usize,
    end: usize,
    keep: Option<&'a Backing>,
    /// Byte fields are padded to 4 (version 2).
    padded: bool,
}

fn bad(what: impl Into<String>) -> TokenizerError {
    TokenizerError::Invalid(format!("frozen tokenizer: {}", what.into()))
}

impl<'a> Reader<'a> {
    /// The next `n` bytes' range in `whole`.
    fn take(&mut self, n: usize, what: &str) -> Result<std::ops::Range<usize>, TokenizerError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.end)
            .ok_or_else(|| bad(format!("truncated in {what}")))?;
        let r = self.at..end;
        self.at = end;
        Ok(r)
    }
    fn u32(&mut self, what: &str) -> Result<u32, TokenizerError> {
        let r = self.take(4, what)?;
        Ok(u32::from_le_bytes(
            self.whole[r].try_into().expect("4 bytes"),
        ))
    }
    fn byte_range(&mut self, what: &str) -> Result<std::ops::Range<usize>, TokenizerError> {
        let n = self.u32(what)? as usize;
        let r = self.take(n, what)?;
        if self.padded {
            self.take((4 - n % 4) % 4, what)?;
        }
        Ok(r)
    }
    fn bytes(&mut self, what: &str) -> Result<Buf<u8>, TokenizerError> {
        let r = self.byte_range(what)?;
        Ok(Buf::view(self.keep, r, self.whole))
    }
    /// A count of items of `elems` u32 each, then the items.
    fn array<T: bytemuck::Pod>(
        &mut self,
        elems: usize,
        what: &str,
    ) -> Result<Buf<T>, TokenizerError> {
        let n = self.u32(what)? as usize;
        let len = n.checked_mul(4 * elems).ok_or_else(|| bad(what))?;
        let r = self.take(len, what)?;
        Ok(Buf::view(self.keep, r, self.whole))
    }
    fn string(&mut self, what: &str) -> Result<String, TokenizerError> {
        let r = self.byte_range(what)?;
        String::from_utf8(self.whole[r].to_vec()).map_err(|_| bad(format!("{what} is not UTF-8")))
    }
}

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
    freeze_version(v, index, bpe, notes, VERSION)
}

/// [`freeze`] in format `version` (1 or 2; tests write 1 to check it is still read).
pub(crate) fn freeze_version(
    v: &Vocab,
    index: &TokenIndex,
    bpe: Option<&Bpe>,
    notes: &[String],
    version: u32,
) -> Vec<u8> {
    let mut w = Writer {
        out: Vec::with_capacity(v.tokens.blob.len() + v.tokens.len() * 9 + 1024),
        padded: version >= 2,
    };
    w.out.extend_from_slice(MAGIC);
    w.u32(version);
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
    if version >= 2 {
        w.u32s(bpe.map_or(&[][..], |b| &b.slots[..]).iter().copied());
    }
    w.u32(notes.len() as u32);
    for n in notes {
        w.bytes(n.as_bytes());
    }
    w.out
}

/// Thaws `whole[range]`; with `keep` (the bytes `whole` is, kept alive), arrays are
/// views of it.
pub(crate) fn thaw(
    whole: &[u8],
    range: std::ops::Range<usize>,
    keep: Option<&Backing>,
) -> Result<Thawed, TokenizerError> {
    let mut r = Reader {
        whole,
        at: range.start,
        end: range.end,
        keep,
        padded: false,
    };
    let magic = r.take(8, "magic")?;
    if &whole[magic] != MAGIC {
        return Err(bad("bad magic"));
    }
    let version = r.u32("version")?;
    if !(OLDEST..=VERSION).contains(&version) {
        return Err(bad(format!(
            "format {version}, this thaw reads {OLDEST} to {VERSION}; rebuild the snapshot"
        )));
    }
    r.padded = version >= 2;
    let kind = match r.u32("kind")? {
        1 => ModelKind::ByteLevelBpe,
        2 => ModelKind::SentencePiece,
        k => return Err(bad(format!("unknown tokenizer kind {k}"))),
    };
    let flags = r.u32("flags")?;
    if flags & !0xF != 0 {
        return Err(bad(format!(
            "unknown flags {flags:#x}; rebuild the snapshot"
        )));
    }
    let mut ids = [None; 6];
    for id in &mut ids {
        let x = r.u32("special ids")?;
        *id = (x != NONE).then_some(x);
    }
    let pre = r.string("pre-tokenizer name")?;
    let offsets = r.array::<u32>(1, "token offsets")?;
    let blob = r.bytes("token texts")?;
    let tokens = Texts::from_frozen(blob, offsets)?;
    let n = tokens.len();
    if n == 0 {
        return Err(bad("empty vocabulary"));
    }
    let scores = r.array::<f32>(1, "scores")?;
    let attrs = r.bytes("attributes")?;
    let eog: Vec<u32> = r.array::<u32>(1, "end-of-generation ids")?.to_vec();
    let slots = r.array::<u32>(1, "index")?;
    let merges = r.array::<[u32; 3]>(3, "merges")?;
    let merge_slots = if version >= 2 {
        Some(r.array::<u32>(1, "merge index")?)
    } else {
        None
    };
    let n_notes = r.u32("notes")?;
    let notes = (0..n_notes)
        .map(|_| r.string("notes"))
        .collect::<Result<Vec<_>, _>>()?;
    if r.at != r.end {
        return Err(bad("trailing bytes"));
    }
    let in_range = |x: &u32| (*x as usize) < n;
    if scores.len() != n || attrs.len() != n {
        return Err(bad("scores or attributes do not match the vocabulary"));
    }
    if !ids.iter().flatten().all(in_range) || !eog.iter().all(in_range) {
        return Err(bad("a special token id is out of range"));
    }
    if !merges.iter().flatten().all(in_range) {
        return Err(bad("a merge names a token out of range"));
    }
    let index = TokenIndex::from_slots(slots, n)
        .ok_or_else(|| bad("the hash index does not fit the vocabulary"))?;
    let ignore_merges = flags & 8 != 0;
    let bpe = match (kind, merge_slots) {
        (ModelKind::ByteLevelBpe, Some(s)) => Some(
            Bpe::from_parts(merges, s, ignore_merges)
                .ok_or_else(|| bad("the merge index does not fit the merges"))?,
        ),
        (ModelKind::ByteLevelBpe, None) => Some(Bpe::new(merges.to_vec(), ignore_merges)),
        (ModelKind::SentencePiece, _) => None,
    };
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
