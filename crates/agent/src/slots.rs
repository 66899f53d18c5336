//! A pilot's cores and GPUs as slots, node by node.

/// Where a unit's cores and GPUs were taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// `(node index, cores)` for each node the unit has cores on, in node order.
    pub cores: Vec<(usize, u32)>,
    /// `(node index, GPU index on that node)` for each GPU handed to the unit.
    pub gpus: Vec<(usize, u32)>,
}

impl Placement {
    /// Whether the unit runs on the agent's own node (node 0) only.
    pub fn is_local(&self) -> bool {
        matches!(self.cores.as_slice(), [(0, _)])
    }

    /// The GPU indices the unit is shown (`CUDA_VISIBLE_DEVICES`): its GPUs on its first
    /// node, which for a unit that is not MPI are all of them.
    pub fn gpu_ids(&self) -> Vec<u32> {
        let first = self.cores.first().map(|(node, _)| *node);
        self.gpus
            .iter()
            .filter(|(node, _)| Some(*node) == first)
            .map(|(_, id)| *id)
            .collect()
    }
}

/// The slots a pilot holds and which of them are free.
///
/// Cores and GPUs are counted per node. A unit takes all its cores and GPUs on one node,
/// except an MPI unit (`spread`), whose ranks take free cores on as many nodes as needed,
/// first nodes first, and whose GPUs come from those same nodes. GPUs are handed out by
/// index on their node, so each unit gets its own devices (exported to it as
/// `CUDA_VISIBLE_DEVICES`).
#[derive(Debug, Clone)]
pub struct Slots {
    cores: Vec<u32>,
    free: Vec<u32>,
    gpus: Vec<u32>,
    /// Per node, the free GPU indices, highest first (the lowest is taken first).
    free_gpus: Vec<Vec<u32>>,
}

impl Slots {
    /// All of `cores` cores and `gpus` GPUs on one node, free.
    pub fn new(cores: u32, gpus: u32) -> Self {
        Self::on_nodes(&[cores], &[gpus])
    }

    /// Nodes with `cores[i]` cores and `gpus[i]` GPUs (none where `gpus` is shorter), all
    /// free.
    pub fn on_nodes(cores: &[u32], gpus: &[u32]) -> Self {
        let gpus: Vec<u32> = (0..cores.len())
            .map(|i| gpus.get(i).copied().unwrap_or(0))
            .collect();
        Self {
            cores: cores.to_vec(),
            free: cores.to_vec(),
            free_gpus: gpus.iter().map(|g| (0..*g).rev().collect()).collect(),
            gpus,
        }
    }

    /// Whether a unit of `cores` cores and `gpus` GPUs could ever start here.
    pub fn fits_ever(&self, cores: u32, gpus: u32, spread: bool) -> bool {
        let gpus_on = |node: usize| self.gpus.get(node).copied().unwrap_or(0);
        place(&self.cores, gpus_on, cores, gpus, spread).is_some()
    }

    /// Takes `cores` cores and `gpus` GPUs if they are free now.
    pub fn take(&mut self, cores: u32, gpus: u32, spread: bool) -> Option<Placement> {
        let free_gpus = &self.free_gpus;
        let gpus_on = |node: usize| free_gpus.get(node).map_or(0, |g| g.len() as u32);
        let (on_nodes, gpu_nodes) = place(&self.free, gpus_on, cores, gpus, spread)?;
        for (node, n) in &on_nodes {
            self.free[*node] -= n;
        }
        let mut taken = Vec::with_capacity(gpus as usize);
        for (node, n) in gpu_nodes {
            let free = &mut self.free_gpus[node];
            let mut ids = free.split_off(free.len() - n as usize);
            ids.sort_unstable();
            taken.extend(ids.into_iter().map(|id| (node, id)));
        }
        Some(Placement {
            cores: on_nodes,
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
        for (node, id) in placement.gpus {
            if let Some(free) = self.free_gpus.get_mut(node) {
                free.push(id);
                free.sort_unstable_by(|a, b| b.cmp(a));
            }
        }
    }
}

/// `(node, cores)` and `(node, GPUs)` pairs: where a unit's cores and GPUs go.
type Spots = (Vec<(usize, u32)>, Vec<(usize, u32)>);

/// Where `cores` cores and `gpus` GPUs would go given the free cores per node and the
/// free GPUs of each node (`gpus_on`), or `None` if they do not fit.
fn place(
    free: &[u32],
    gpus_on: impl Fn(usize) -> u32,
    cores: u32,
    gpus: u32,
    spread: bool,
) -> Option<Spots> {
    if !spread {
        let node = (0..free.len()).find(|&i| free[i] >= cores && gpus_on(i) >= gpus)?;
        let on_gpus = if gpus > 0 { vec![(node, gpus)] } else { vec![] };
        return Some((vec![(node, cores)], on_gpus));
    }
    if free.iter().sum::<u32>() < cores {
        return None;
    }
    let mut left = cores;
    let mut on_nodes = Vec::new();
    for (i, f) in free.iter().enumerate() {
        if left == 0 {
            break;
        }
        let n = (*f).min(left);
        if n > 0 {
            on_nodes.push((i, n));
            left -= n;
        }
    }
    // The GPUs come from the nodes the ranks run on, first nodes first.
    let mut left = gpus;
    let mut on_gpus = Vec::new();
    for (node, _) in &on_nodes {
        if left == 0 {
            break;
        }
        let n = gpus_on(*node).min(left);
        if n > 0 {
            on_gpus.push((*node, n));
            left -= n;
        }
    }
    (left == 0).then_some((on_nodes, on_gpus))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_taken_and_given_back() {
        let mut s = Slots::new(4, 2);
        let a = s.take(3, 1, false).expect("3 of 4 cores");
        assert_eq!(a.gpu_ids(), vec![0]);
        assert!(a.is_local());
        assert_eq!(s.take(2, 0, false), None, "only one core left");
        assert_eq!(s.take(1, 2, false), None, "only one GPU left");
        let b = s.take(1, 1, false).expect("the last core");
        assert_eq!(b.gpu_ids(), vec![1]);
        assert_eq!(s.take(1, 0, false), None, "every core is taken");
        s.give_back(a);
        assert_eq!(s.take(3, 1, false).map(|p| p.gpu_ids()), Some(vec![0]));
        assert_eq!(s.take(5, 0, false), None, "more than the pilot has");
    }

    #[test]
    fn units_stay_on_one_node_unless_spread() {
        let mut s = Slots::on_nodes(&[2, 2, 2], &[]);
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

    #[test]
    fn gpus_are_counted_and_numbered_per_node() {
        // Two nodes of 4 cores and 2 GPUs each.
        let mut s = Slots::on_nodes(&[4, 4], &[2, 2]);
        assert!(!s.fits_ever(1, 3, false), "no node has 3 GPUs");
        assert!(
            s.fits_ever(8, 4, true),
            "an MPI unit may use both nodes' GPUs"
        );
        assert!(
            !s.fits_ever(4, 3, true),
            "4 ranks fit on one node, which has 2 GPUs"
        );
        let a = s.take(1, 2, false).expect("both GPUs of node 0");
        assert_eq!((a.cores.clone(), a.gpu_ids()), (vec![(0, 1)], vec![0, 1]));
        // Node 0 still has 3 cores but no GPU: the next GPU unit goes to node 1, where
        // its devices are numbered from 0 again.
        let b = s.take(1, 1, false).expect("a GPU of node 1");
        assert_eq!((b.cores.clone(), b.gpu_ids()), (vec![(1, 1)], vec![0]));
        assert!(!b.is_local());
        let c = s.take(2, 0, false).expect("cores without GPUs");
        assert_eq!(c.cores, vec![(0, 2)], "node 0's cores are still there");
        assert_eq!(s.take(1, 2, false), None, "one GPU is free, on node 1");
        s.give_back(a);
        let d = s.take(1, 2, false).expect("node 0's GPUs are back");
        assert_eq!(d.gpus, vec![(0, 0), (0, 1)]);

        // An MPI unit's GPUs come from the nodes its ranks run on.
        let mut s = Slots::on_nodes(&[2, 2], &[1, 1]);
        let mpi = s.take(4, 2, true).expect("2 ranks and 1 GPU on each node");
        assert_eq!(mpi.cores, vec![(0, 2), (1, 2)]);
        assert_eq!(mpi.gpus, vec![(0, 0), (1, 0)]);
        assert_eq!(mpi.gpu_ids(), vec![0], "the first node's devices");
        s.give_back(mpi);
        assert_eq!(
            s.take(2, 2, true),
            None,
            "2 ranks land on node 0, with 1 GPU"
        );
        assert!(!s.fits_ever(2, 2, true));
    }
}
