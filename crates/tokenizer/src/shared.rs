//! Arrays a thawed tokenizer reads where they lie (a snapshot's mapping) instead of
//! copying them: Gemma 3's token texts, offsets, scores and hash table are ~7 MB, and
//! copying them was most of its start-up tokenizer time.

use std::ops::{Deref, Range};
use std::sync::Arc;

/// Bytes that outlive the tokenizer viewing them (a snapshot's file mapping).
pub type Backing = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// An array owned, or viewed in place in a [`Backing`] (a byte range whose alignment
/// and length suit `T`, checked when the view is made).
#[derive(Clone)]
pub(crate) enum Buf<T> {
    Owned(Vec<T>),
    Mapped { keep: Backing, bytes: Range<usize> },
}

impl<T: bytemuck::Pod> Buf<T> {
    /// `bytes` of `keep` as `[T]` in place when aligned for `T` (and the target is
    /// little-endian, the stored order), otherwise a copy.
    pub fn view(keep: Option<&Backing>, bytes: Range<usize>, whole: &[u8]) -> Self {
        let b = &whole[bytes.clone()];
        if let Some(k) = keep.filter(|_| cfg!(target_endian = "little"))
            && bytemuck::try_cast_slice::<u8, T>(b).is_ok()
        {
            return Buf::Mapped {
                keep: Arc::clone(k),
                bytes,
            };
        }
        Buf::Owned(
            b.chunks_exact(size_of::<T>())
                .map(bytemuck::pod_read_unaligned)
                .collect(),
        )
    }
}

impl<T: bytemuck::Pod> Deref for Buf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Buf::Owned(v) => v,
            // Alignment and length were checked when the view was made.
            Buf::Mapped { keep, bytes } => bytemuck::cast_slice(&(**keep).as_ref()[bytes.clone()]),
        }
    }
}

impl<T> From<Vec<T>> for Buf<T> {
    fn from(v: Vec<T>) -> Self {
        Buf::Owned(v)
    }
}

impl<T: bytemuck::Pod + PartialEq> PartialEq for Buf<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: bytemuck::Pod + Eq> Eq for Buf<T> {}

impl<T: bytemuck::Pod + std::fmt::Debug> std::fmt::Debug for Buf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Buf::Owned(_) => "owned",
            Buf::Mapped { .. } => "mapped",
        };
        write!(
            f,
            "{kind} [{} × {}]",
            self.len(),
            std::any::type_name::<T>()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_aligned_bytes_in_place_and_copies_the_rest() {
        let data: Vec<u8> = (0..64u8).collect();
        let keep: Backing = Arc::new(data.clone());
        let whole = (*keep).as_ref();
        let want: Vec<u32> = (0..4)
            .map(|i| u32::from_le_bytes(data[4 + 4 * i..8 + 4 * i].try_into().unwrap()))
            .collect();
        let aligned = whole.as_ptr().align_offset(4);
        let at = |s: usize| Buf::<u32>::view(Some(&keep), s..s + 16, whole);
        let in_place = at(aligned + 4);
        assert!(matches!(in_place, Buf::Mapped { .. }));
        let moved = at(aligned + 5);
        assert!(matches!(moved, Buf::Owned(_)));
        let shifted: Vec<u32> = (0..4)
            .map(|i| {
                let s = aligned + 5 + 4 * i;
                u32::from_le_bytes(data[s..s + 4].try_into().unwrap())
            })
            .collect();
        assert_eq!(&*moved, &shifted[..]);
        if aligned == 0 {
            assert_eq!(&*in_place, &want[..]);
        }
        assert!(matches!(
            Buf::<u32>::view(None, 0..16, whole),
            Buf::Owned(_)
        ));
    }
}
