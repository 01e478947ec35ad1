//! A list that grows a block at a time, for the million small rows a comparison keeps: it
//! never copies what it holds to grow, so it never holds its rows twice while it grows, and
//! it leaves the allocator no outgrown buffers of megabytes to keep (a `Vec` doubling from a
//! few kilobytes to 24 MB left about 20 MB of them behind in the view server).

/// Bytes of one block, about: small enough to come from the allocator's heap, large enough
/// that the blocks' own list is short.
const BLOCK_BYTES: usize = 64 << 10;

/// An append-only list in blocks of about [`BLOCK_BYTES`].
#[derive(Debug, Clone)]
pub struct Blocks<T> {
    blocks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Blocks<T> {
    fn default() -> Self {
        Self {
            blocks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Blocks<T> {
    /// Values in one block.
    const PER_BLOCK: usize = {
        let size = std::mem::size_of::<T>();
        if size == 0 || size >= BLOCK_BYTES {
            1
        } else {
            BLOCK_BYTES / size
        }
    };

    /// Adds `value` at the end. The first block grows as a `Vec` does, so that a short list
    /// takes little; every later one is made whole.
    pub fn push(&mut self, value: T) {
        match self.blocks.last_mut() {
            Some(block) if block.len() < Self::PER_BLOCK => block.push(value),
            Some(_) => {
                let mut block = Vec::with_capacity(Self::PER_BLOCK);
                block.push(value);
                self.blocks.push(block);
            }
            None => self.blocks.push(vec![value]),
        }
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, index: usize) -> Option<&T> {
        self.blocks
            .get(index / Self::PER_BLOCK)?
            .get(index % Self::PER_BLOCK)
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.blocks.iter().flatten()
    }

    /// The values from `start` up to `end` (not included), in order.
    pub fn range(&self, start: usize, end: usize) -> impl Iterator<Item = &T> {
        (start..end.min(self.len)).filter_map(|i| self.get(i))
    }

    /// The bytes its blocks take.
    pub fn weight(&self) -> usize {
        let values: usize = self.blocks.iter().map(Vec::capacity).sum();
        values * std::mem::size_of::<T>()
    }
}

impl<T> FromIterator<T> for Blocks<T> {
    fn from_iter<I: IntoIterator<Item = T>>(values: I) -> Self {
        let mut blocks = Self::default();
        for value in values {
            blocks.push(value);
        }
        blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_in_blocks_holds_and_gives_back_what_a_vec_would() {
        for n in [0, 1, 8191, 8192, 8193, 100_000] {
            let blocks: Blocks<u64> = (0..n).collect();
            assert_eq!(blocks.len(), n as usize);
            assert!(blocks.iter().copied().eq(0..n));
            assert_eq!(blocks.get(n as usize), None);
            if n > 0 {
                assert_eq!(blocks.get(n as usize - 1), Some(&(n - 1)));
            }
            let (start, end) = (n as usize / 3, n as usize / 3 * 2 + 5);
            assert!(
                blocks
                    .range(start, end)
                    .copied()
                    .eq(start as u64..(end as u64).min(n))
            );
            assert!(blocks.weight() >= blocks.len() * 8);
            // A short list takes little; a long one at most a block more than its values.
            assert!(
                blocks.weight()
                    <= (blocks.len() * 8)
                        .next_power_of_two()
                        .min(blocks.len() * 8 + BLOCK_BYTES)
            );
        }
    }
}
