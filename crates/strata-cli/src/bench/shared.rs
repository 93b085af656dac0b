//! Memory the processes of a fleet share (W5): the source of truth's versions and the
//! staleness bookkeeping, as atomics in one file mapped into every process — so that a load
//! or a staleness check costs what it does in W1 (an atomic load), not a round trip.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::atomic::AtomicU64;

/// A file of `u64` words, mapped shared.
pub(crate) struct SharedWords {
    map: memmap2::MmapMut,
}

impl SharedWords {
    /// Creates `path` holding `words` zeros and maps it.
    pub(crate) fn create(path: &Path, words: usize) -> std::io::Result<SharedWords> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.set_len((words * 8) as u64)?;
        Self::map(&file)
    }

    /// Maps the file another process created.
    pub(crate) fn open(path: &Path) -> std::io::Result<SharedWords> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Self::map(&file)
    }

    fn map(file: &std::fs::File) -> std::io::Result<SharedWords> {
        // SAFETY: the mapping is shared with the fleet's other processes on purpose; they
        // touch it only through the atomics `words` hands out, and nobody truncates the file
        // while it is mapped (the coordinator removes it after every process ended).
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::MmapMut::map_mut(file)? };
        Ok(SharedWords { map })
    }

    /// The words, for the life of the process (the mapping is leaked: a run maps it once).
    pub(crate) fn leak(self) -> &'static [AtomicU64] {
        let map: &'static mut memmap2::MmapMut = Box::leak(Box::new(self.map));
        let len = map.len() / 8;
        let ptr = map.as_mut_ptr().cast::<AtomicU64>();
        // SAFETY: a mapping is page-aligned, so 8-aligned; `len` whole words lie inside it;
        // `AtomicU64` has the size and alignment of `u64`, and any bit pattern is one; the
        // mapping lives as long as the process (leaked above), and is only ever accessed
        // through these atomics, here and in the other processes.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(ptr, len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn two_mappings_of_one_file_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("words");
        let a = SharedWords::create(&path, 4).unwrap().leak();
        let b = SharedWords::open(&path).unwrap().leak();
        assert_eq!((a.len(), b.len()), (4, 4));
        a[3].fetch_add(7, Ordering::AcqRel);
        b[3].fetch_max(5, Ordering::AcqRel);
        assert_eq!(b[3].load(Ordering::Acquire), 7);
        assert_eq!(a[0].load(Ordering::Acquire), 0);
    }
}
