//! Random install orders, drawn purely from a seed: which pieces of a platform arrive, in which
//! order and with which gaps, and which bundles (with `dependsOn`) in which namespaces. The same
//! seed always gives the same order (ChaCha8 is a portable stream), so any failure replays.

use std::fmt;
use std::time::Duration;

use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

/// The longest pause between two pieces arriving.
pub const MAX_GAP: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Piece {
    /// The SecretBundle CRD.
    OurCrd,
    /// The operator process.
    Operator,
    /// ESO's CRDs.
    EsoCrds,
    /// ESO's controller process.
    EsoController,
    /// The `ameide-vault` ClusterSecretStore (and its token Secret), pointing at OpenBao.
    Store,
    /// `Order::namespaces[i]`.
    Namespace(usize),
    /// `Order::bundles[i]`.
    Bundle(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    pub name: String,
    /// Index into `Order::namespaces`.
    pub namespace: usize,
    /// Indexes of earlier bundles only: the graph is acyclic by construction.
    pub depends_on: Vec<usize>,
    /// How many ExternalSecrets it has.
    pub secrets: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Pause after the previous step began.
    pub gap: Duration,
    pub piece: Piece,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub seed: u64,
    pub namespaces: Vec<String>,
    pub bundles: Vec<Bundle>,
    pub steps: Vec<Step>,
}

/// The order of `seed`: 1-3 namespaces, 2-5 bundles of 1-2 secrets (each depending on every
/// earlier one with probability 0.4), and every piece exactly once, shuffled, each after a gap of
/// 0 to [`MAX_GAP`]. Names carry the seed, so orders never share an object.
pub fn draw(seed: u64) -> Order {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let namespaces: Vec<String> = (0..rng.random_range(1..=3usize))
        .map(|k| format!("o{seed}-ns{k}"))
        .collect();
    let mut bundles = Vec::new();
    for i in 0..rng.random_range(2..=5usize) {
        let depends_on = (0..i).filter(|_| rng.random_bool(0.4)).collect();
        bundles.push(Bundle {
            name: format!("o{seed}-b{i}"),
            namespace: rng.random_range(0..namespaces.len()),
            depends_on,
            secrets: rng.random_range(1..=2),
        });
    }
    let mut pieces = vec![
        Piece::OurCrd,
        Piece::Operator,
        Piece::EsoCrds,
        Piece::EsoController,
        Piece::Store,
    ];
    pieces.extend((0..namespaces.len()).map(Piece::Namespace));
    pieces.extend((0..bundles.len()).map(Piece::Bundle));
    pieces.shuffle(&mut rng);
    let max_gap = MAX_GAP.as_millis() as u64;
    let steps = pieces
        .into_iter()
        .map(|piece| Step {
            gap: Duration::from_millis(rng.random_range(0..=max_gap)),
            piece,
        })
        .collect();
    Order {
        seed,
        namespaces,
        bundles,
        steps,
    }
}

impl Order {
    pub fn describe(&self, piece: Piece) -> String {
        match piece {
            Piece::OurCrd => "SecretBundle CRD".into(),
            Piece::Operator => "operator".into(),
            Piece::EsoCrds => "ESO CRDs".into(),
            Piece::EsoController => "ESO controller".into(),
            Piece::Store => "ClusterSecretStore".into(),
            Piece::Namespace(k) => format!("namespace {}", self.namespaces[k]),
            Piece::Bundle(i) => {
                let b = &self.bundles[i];
                let deps: Vec<&str> = b
                    .depends_on
                    .iter()
                    .map(|d| self.bundles[*d].name.as_str())
                    .collect();
                format!(
                    "bundle {} (-> {}, dependsOn {deps:?})",
                    b.name, self.namespaces[b.namespace]
                )
            }
        }
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed {}:", self.seed)?;
        for s in &self.steps {
            write!(f, " +{}ms {};", s.gap.as_millis(), self.describe(s.piece))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    #[test]
    fn a_seed_always_draws_the_same_order() {
        for seed in [0, 1, 42, u64::MAX] {
            assert_eq!(draw(seed), draw(seed));
        }
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn every_piece_arrives_exactly_once_within_the_gap() {
        for seed in 0..500 {
            let o = draw(seed);
            let mut want: Vec<Piece> = vec![
                Piece::OurCrd,
                Piece::Operator,
                Piece::EsoCrds,
                Piece::EsoController,
                Piece::Store,
            ];
            want.extend((0..o.namespaces.len()).map(Piece::Namespace));
            want.extend((0..o.bundles.len()).map(Piece::Bundle));
            let mut got: Vec<Piece> = o.steps.iter().map(|s| s.piece).collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{o}");
            assert!(o.steps.iter().all(|s| s.gap <= MAX_GAP), "{o}");
            assert!((1..=3).contains(&o.namespaces.len()));
            assert!((2..=5).contains(&o.bundles.len()));
        }
    }

    #[test]
    fn dependencies_point_backwards_so_there_is_never_a_cycle() {
        for seed in 0..500 {
            let o = draw(seed);
            for (i, b) in o.bundles.iter().enumerate() {
                assert!(b.depends_on.iter().all(|d| *d < i), "{o}");
                assert!(b.namespace < o.namespaces.len());
                assert!((1..=2).contains(&b.secrets));
            }
        }
    }

    #[test]
    fn orders_vary_every_way_that_matters() {
        let orders: Vec<Order> = (1..=200).map(draw).collect();
        // Each fixed piece is sometimes first and sometimes last.
        let firsts: BTreeSet<Piece> = orders.iter().map(|o| o.steps[0].piece).collect();
        let lasts: BTreeSet<Piece> = orders
            .iter()
            .filter_map(|o| o.steps.last().map(|s| s.piece))
            .collect();
        for p in [
            Piece::OurCrd,
            Piece::Operator,
            Piece::EsoCrds,
            Piece::EsoController,
            Piece::Store,
        ] {
            assert!(firsts.contains(&p) && lasts.contains(&p), "{p:?}");
        }
        // Dependents often arrive before what they depend on, and chains occur.
        let before = orders
            .iter()
            .filter(|o| {
                let pos: BTreeMap<Piece, usize> = o
                    .steps
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.piece, i))
                    .collect();
                o.bundles.iter().enumerate().any(|(i, b)| {
                    b.depends_on
                        .iter()
                        .any(|d| pos[&Piece::Bundle(i)] < pos[&Piece::Bundle(*d)])
                })
            })
            .count();
        assert!(before > 40, "{before}");
        let chains = orders
            .iter()
            .filter(|o| {
                o.bundles.iter().any(|b| {
                    b.depends_on
                        .iter()
                        .any(|d| !o.bundles[*d].depends_on.is_empty())
                })
            })
            .count();
        assert!(chains > 20, "{chains}");
        let distinct: BTreeSet<String> = orders
            .iter()
            .map(|o| format!("{:?}", o.steps.iter().map(|s| s.piece).collect::<Vec<_>>()))
            .collect();
        assert_eq!(distinct.len(), 200);
    }
}
