//! A pilot's cores and GPUs as slots, node by node.

/// Where a unit's cores and GPUs were taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// `(node index, cores)` for each node the unit has cores on, in node order.
    pub cores: Vec<(usize, u32)>,
    /// The GPU indices handed to the unit.
    pub gpus: Vec<u32>,
}

impl Placement {
    /// Whether the unit runs on the agent's own node (node 0) only.
    pub fn is_local(&self) -> bool {
        matches!(self.cores.as_slice(), [(0, _)])
    }
}

/// The slots a pilot holds and which of them are free.
///
/// Cores are counted per node. A unit takes all its cores on one node, except an MPI unit
/// (`spread`), whose ranks take free cores on as many nodes as needed, first nodes first.
/// GPUs are counted for the pilot as a whole and handed out by index so each unit gets its
/// own devices (exported to it as `CUDA_VISIBLE_DEVICES`).
#[derive(Debug, Clone)]
pub struct Slots {
    cores: Vec<u32>,
    free: Vec<u32>,
    gpus: u32,
    free_gpus: Vec<u32>,
}

impl Slots {
    /// All of `cores` cores on one node and `gpus` GPUs, free.
    pub fn new(cores: u32, gpus: u32) -> Self {
        Self::on_nodes(&[cores], gpus)
    }

    /// Nodes with these many cores each, and `gpus` GPUs, all free.
    pub fn on_nodes(cores: &[u32], gpus: u32) -> Self {
        Self {
            cores: cores.to_vec(),
            free: cores.to_vec(),
            gpus,
            free_gpus: (0..gpus).rev().collect(),
        }
    }

    /// Whether a unit of `cores` cores and `gpus` GPUs could ever start here.
    pub fn fits_ever(&self, cores: u32, gpus: u32, spread: bool) -> bool {
        let room = if spread {
            self.cores.iter().sum()
        } else {
            self.cores.iter().copied().max().unwrap_or(0)
        };
        cores <= room && gpus <= self.gpus
    }

    /// Takes `cores` cores and `gpus` GPUs if they are free now.
    pub fn take(&mut self, cores: u32, gpus: u32, spread: bool) -> Option<Placement> {
        if gpus as usize > self.free_gpus.len() {
            return None;
        }
        let placed: Vec<(usize, u32)> = if spread {
            if self.free.iter().sum::<u32>() < cores {
                return None;
            }
            let mut left = cores;
            let mut placed = Vec::new();
            for (i, free) in self.free.iter().enumerate() {
                if left == 0 {
                    break;
                }
                let n = (*free).min(left);
                if n > 0 {
                    placed.push((i, n));
                    left -= n;
                }
            }
            placed
        } else {
            let node = self.free.iter().position(|f| *f >= cores)?;
            vec![(node, cores)]
        };
        for (node, n) in &placed {
            self.free[*node] -= n;
        }
        let at = self.free_gpus.len() - gpus as usize;
        let mut taken = self.free_gpus.split_off(at);
        taken.sort_unstable();
        Some(Placement {
            cores: placed,
            gpus: taken,
        })
    }

    /// How many cores are free, over all nodes.
    pub fn free_cores(&self) -> u32 {
        self.free.iter().sum()
    }

    /// Gives back what [`take`](Self::take) handed out.
    pub fn give_back(&mut self, placement: Placement) {
        for (node, n) in placement.cores {
            if let (Some(free), Some(cap)) = (self.free.get_mut(node), self.cores.get(node)) {
                *free = (*free + n).min(*cap);
            }
        }
        self.free_gpus.extend(placement.gpus);
        self.free_gpus.sort_unstable_by(|a, b| b.cmp(a));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_taken_and_given_back() {
        let mut s = Slots::new(4, 2);
        let a = s.take(3, 1, false).expect("3 of 4 cores");
        assert_eq!(a.gpus, vec![0]);
        assert!(a.is_local());
        assert_eq!(s.take(2, 0, false), None, "only one core left");
        assert_eq!(s.take(1, 2, false), None, "only one GPU left");
        let b = s.take(1, 1, false).expect("the last core");
        assert_eq!(b.gpus, vec![1]);
        assert_eq!(s.take(1, 0, false), None, "every core is taken");
        s.give_back(a);
        assert_eq!(s.take(3, 1, false).map(|p| p.gpus), Some(vec![0]));
        assert_eq!(s.take(5, 0, false), None, "more than the pilot has");
    }

    #[test]
    fn units_stay_on_one_node_unless_spread() {
        let mut s = Slots::on_nodes(&[2, 2, 2], 0);
        assert!(!s.fits_ever(3, 0, false), "no node has 3 cores");
        assert!(s.fits_ever(6, 0, true), "ranks may span all three nodes");
        let one = s.take(1, 0, false).expect("a core");
        assert_eq!(one.cores, vec![(0, 1)]);
        let two = s.take(2, 0, false).expect("a whole node");
        assert_eq!(two.cores, vec![(1, 2)], "node 0 has only one core left");
        assert!(!two.is_local());
        let mpi = s.take(3, 0, true).expect("three ranks over the rest");
        assert_eq!(mpi.cores, vec![(0, 1), (2, 2)]);
        assert_eq!(s.free_cores(), 0);
        s.give_back(mpi);
        assert_eq!(s.free_cores(), 3);
    }
}
