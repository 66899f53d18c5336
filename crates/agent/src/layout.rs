//! Which nodes a pilot's cores are on, and how a unit reaches a node that is not the
//! agent's own.
//!
//! A pilot placed through a batch system reads its job's allocation
//! ([`Allocation::from_env`]); every other pilot is this one host. The agent runs on the
//! allocation's first node and starts units placed there itself. A unit placed on another
//! node, and every MPI unit, starts through the allocation's launcher: `srun` inside a
//! Slurm job (with `--overlap`, since the agent, not Slurm, accounts for the cores), and
//! `mpirun` (Open MPI's `-host name:slots` syntax) elsewhere.

use pstar_model::{PilotComputeDescription, Scheme};

use crate::allocation::{Allocation, Source};
use crate::slots::Placement;

/// How units reach the nodes of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    Srun,
    Mpirun,
}

/// The nodes a pilot's cores are on.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Node names; the agent runs on the first.
    pub nodes: Vec<String>,
    /// Cores the pilot holds on each node.
    pub cores: Vec<u32>,
    pub launcher: Launcher,
}

impl Layout {
    /// One host with all of the pilot's cores.
    pub fn single(cores: u32) -> Self {
        let name = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        Self {
            nodes: vec![name],
            cores: vec![cores],
            launcher: Launcher::Mpirun,
        }
    }

    /// The layout of a pilot with description `d`, its allocation read from this
    /// process's environment for batch resources. The pilot holds `cores / nodes` cores
    /// on each of its first `nodes` allocated nodes (the description wins over a larger
    /// allocation).
    pub fn for_pilot(d: &PilotComputeDescription) -> Result<Self, String> {
        let batch = !matches!(d.resource.scheme(), Scheme::Local | Scheme::Ssh);
        if !batch {
            return Ok(Self::single(d.cores));
        }
        let allocation = Allocation::from_env(
            |name| std::env::var(name).ok(),
            |path| std::fs::read_to_string(path),
        )
        .map_err(|e| format!("cannot read the batch job's allocation: {e}"))?;
        Ok(match allocation {
            Some(a) => Self::from_allocation(d, &a),
            None => Self::single(d.cores),
        })
    }

    /// The layout of a pilot with description `d` in allocation `a`.
    pub fn from_allocation(d: &PilotComputeDescription, a: &Allocation) -> Self {
        let wanted = d.node_count() as usize;
        if a.nodes.len() < wanted {
            tracing::warn!(
                allocated = a.nodes.len(),
                wanted,
                "the batch job holds fewer nodes than the pilot asked for"
            );
        }
        let nodes: Vec<String> = a
            .nodes
            .iter()
            .take(wanted)
            .map(|n| n.name.clone())
            .collect();
        let per_node = d.cores_per_node();
        let cores = if nodes.len() == wanted {
            vec![per_node; nodes.len()]
        } else {
            a.nodes
                .iter()
                .take(wanted)
                .map(|n| n.cores.min(per_node))
                .collect()
        };
        Self {
            nodes,
            cores,
            launcher: if a.source == Source::Slurm {
                Launcher::Srun
            } else {
                Launcher::Mpirun
            },
        }
    }

    /// The command words to put before a unit's own (program and arguments), or `None`
    /// when the agent starts it directly.
    pub fn prefix(&self, placement: &Placement, mpi: bool) -> Option<Vec<String>> {
        if !mpi && placement.is_local() {
            return None;
        }
        let name = |i: usize| self.nodes.get(i).cloned().unwrap_or_default();
        let ranks: u32 = placement.cores.iter().map(|(_, n)| n).sum();
        Some(match (self.launcher, mpi) {
            (Launcher::Srun, true) => vec![
                "srun".into(),
                "--overlap".into(),
                "--quiet".into(),
                "--kill-on-bad-exit=1".into(),
                format!("--nodes={}", placement.cores.len()),
                format!("--ntasks={ranks}"),
                format!(
                    "--nodelist={}",
                    placement
                        .cores
                        .iter()
                        .map(|(i, _)| name(*i))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ],
            (Launcher::Srun, false) => vec![
                "srun".into(),
                "--overlap".into(),
                "--quiet".into(),
                "--nodes=1".into(),
                "--ntasks=1".into(),
                format!("--cpus-per-task={ranks}"),
                format!("--nodelist={}", name(placement.cores[0].0)),
            ],
            (Launcher::Mpirun, true) => vec![
                "mpirun".into(),
                "-np".into(),
                ranks.to_string(),
                "-host".into(),
                placement
                    .cores
                    .iter()
                    .map(|(i, n)| format!("{}:{n}", name(*i)))
                    .collect::<Vec<_>>()
                    .join(","),
            ],
            (Launcher::Mpirun, false) => vec![
                "mpirun".into(),
                "-np".into(),
                "1".into(),
                "-host".into(),
                format!("{}:{ranks}", name(placement.cores[0].0)),
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocation::Node;

    fn pilot(cores: u32, nodes: u32, resource: &str) -> PilotComputeDescription {
        PilotComputeDescription {
            cores,
            nodes: Some(nodes),
            resource: resource.parse().expect("resource URL"),
            ..Default::default()
        }
    }

    fn allocation(source: Source, nodes: &[(&str, u32)]) -> Allocation {
        Allocation {
            nodes: nodes
                .iter()
                .map(|(n, c)| Node {
                    name: (*n).into(),
                    cores: *c,
                })
                .collect(),
            source,
        }
    }

    #[test]
    fn the_description_decides_cores_per_node() {
        let a = allocation(Source::Slurm, &[("n1", 16), ("n2", 16), ("n3", 16)]);
        let l = Layout::from_allocation(&pilot(8, 2, "slurm://"), &a);
        assert_eq!(l.nodes, ["n1", "n2"]);
        assert_eq!(l.cores, [4, 4]);
        assert_eq!(l.launcher, Launcher::Srun);
        let short = allocation(Source::GridEngine, &[("vm", 2)]);
        let l = Layout::from_allocation(&pilot(8, 2, "sge://"), &short);
        assert_eq!((l.nodes.len(), l.cores.as_slice()), (1, &[2][..]));
        assert_eq!(l.launcher, Launcher::Mpirun);
    }

    #[test]
    fn units_off_the_agent_node_and_mpi_units_go_through_the_launcher() {
        let a = allocation(Source::Slurm, &[("n1", 2), ("n2", 2)]);
        let l = Layout::from_allocation(&pilot(4, 2, "slurm://"), &a);
        let here = Placement {
            cores: vec![(0, 2)],
            gpus: vec![],
        };
        assert_eq!(l.prefix(&here, false), None);
        let there = Placement {
            cores: vec![(1, 2)],
            gpus: vec![],
        };
        assert_eq!(
            l.prefix(&there, false).expect("srun").join(" "),
            "srun --overlap --quiet --nodes=1 --ntasks=1 --cpus-per-task=2 --nodelist=n2"
        );
        let mpi = Placement {
            cores: vec![(0, 2), (1, 1)],
            gpus: vec![],
        };
        assert_eq!(
            l.prefix(&mpi, true).expect("srun").join(" "),
            "srun --overlap --quiet --kill-on-bad-exit=1 --nodes=2 --ntasks=3 --nodelist=n1,n2"
        );
        let pbs = Layout::from_allocation(
            &pilot(4, 2, "pbs://"),
            &allocation(Source::Pbs, &[("a", 2), ("b", 2)]),
        );
        assert_eq!(
            pbs.prefix(&mpi, true).expect("mpirun").join(" "),
            "mpirun -np 3 -host a:2,b:1"
        );
        assert_eq!(
            pbs.prefix(&there, false).expect("mpirun").join(" "),
            "mpirun -np 1 -host b:2"
        );
    }
}
