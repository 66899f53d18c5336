//! A pilot's cores and GPUs as slots.

/// The slots a pilot holds and which of them are free.
///
/// Cores are counted; GPUs are handed out by index so each unit gets its own devices
/// (exported to it as `CUDA_VISIBLE_DEVICES`).
#[derive(Debug, Clone)]
pub struct Slots {
    cores: u32,
    free_cores: u32,
    free_gpus: Vec<u32>,
}

impl Slots {
    /// All of `cores` cores and `gpus` GPUs, free.
    pub fn new(cores: u32, gpus: u32) -> Self {
        Self {
            cores,
            free_cores: cores,
            free_gpus: (0..gpus).rev().collect(),
        }
    }

    /// Takes `cores` cores and `gpus` GPUs if that many are free; returns the GPU indices.
    pub fn take(&mut self, cores: u32, gpus: u32) -> Option<Vec<u32>> {
        if cores > self.free_cores || gpus as usize > self.free_gpus.len() {
            return None;
        }
        self.free_cores -= cores;
        let at = self.free_gpus.len() - gpus as usize;
        let mut taken = self.free_gpus.split_off(at);
        taken.sort_unstable();
        Some(taken)
    }

    /// How many cores are free.
    pub fn free_cores(&self) -> u32 {
        self.free_cores
    }

    /// Gives back what [`take`](Self::take) handed out.
    pub fn give_back(&mut self, cores: u32, gpus: Vec<u32>) {
        self.free_cores = (self.free_cores + cores).min(self.cores);
        self.free_gpus.extend(gpus);
        self.free_gpus.sort_unstable_by(|a, b| b.cmp(a));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_taken_and_given_back() {
        let mut s = Slots::new(4, 2);
        assert_eq!(s.take(3, 1), Some(vec![0]));
        assert_eq!(s.take(2, 0), None, "only one core left");
        assert_eq!(s.take(1, 2), None, "only one GPU left");
        assert_eq!(s.take(1, 1), Some(vec![1]));
        assert_eq!(s.take(1, 0), None, "every core is taken");
        s.give_back(3, vec![0]);
        assert_eq!(s.take(3, 1), Some(vec![0]));
        assert_eq!(s.take(5, 0), None, "more than the pilot has");
    }
}
