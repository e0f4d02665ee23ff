//! Rendezvous (highest random weight) hashing of virtual shards to nodes: every node computes
//! the same owner for a shard from the same set of live nodes, a lost node's shards spread over
//! the survivors and no other shard moves, and a new node takes about `1/n` of the shards.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The weight of `node` for `shard`: the shard goes to the node of highest weight.
fn weight(node: &str, shard: u32) -> u64 {
    xxh3_64_with_seed(
        node.as_bytes(),
        u64::from(shard).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    )
}

/// The node among `nodes` that `shard` belongs to (ties, which need equal names, go to the
/// first).
pub fn owner<S: AsRef<str>>(shard: u32, nodes: &[S]) -> Option<&str> {
    nodes
        .iter()
        .map(AsRef::as_ref)
        .max_by_key(|node| (weight(node, shard), std::cmp::Reverse(*node)))
}

/// The owner of each of `shards` shards among `nodes`.
pub fn assign<S: AsRef<str>>(shards: u32, nodes: &[S]) -> Vec<Option<String>> {
    (0..shards)
        .map(|shard| owner(shard, nodes).map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    fn counts(assignment: &[Option<String>], nodes: &[String]) -> Vec<usize> {
        nodes
            .iter()
            .map(|n| {
                assignment
                    .iter()
                    .filter(|o| o.as_deref() == Some(n))
                    .count()
            })
            .collect()
    }

    #[test]
    fn every_shard_has_one_owner_and_no_nodes_means_none() {
        let nodes = names(3);
        assert!(assign(1024, &nodes).iter().all(Option::is_some));
        assert!(assign::<String>(8, &[]).iter().all(Option::is_none));
        // The order nodes are listed in does not matter.
        let mut reversed = nodes.clone();
        reversed.reverse();
        assert_eq!(assign(1024, &nodes), assign(1024, &reversed));
    }

    /// The assignment with 3 to 100 nodes: balance, and what moves when one node is lost or
    /// added. Prints the table (`cargo test -p actors assignment -- --nocapture`).
    #[test]
    fn assignment_is_balanced_and_moves_only_what_it_must() {
        const SHARDS: u32 = 1024;
        println!("nodes  max/mean  min/mean  moved(lose one)  moved(add one)  ideal(add)");
        for n in [3usize, 5, 10, 20, 30, 50, 100] {
            let nodes = names(n);
            let before = assign(SHARDS, &nodes);
            let c = counts(&before, &nodes);
            let mean = f64::from(SHARDS) / n as f64;
            let max = *c.iter().max().unwrap() as f64 / mean;
            let min = *c.iter().min().unwrap() as f64 / mean;
            // Lose node 0: exactly its shards move.
            let lost = &nodes[1..];
            let after_loss = assign(SHARDS, lost);
            let moved_loss = before
                .iter()
                .zip(&after_loss)
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(moved_loss, c[0], "only the lost node's shards move");
            // Add a node: only shards that go to it move.
            let mut grown = nodes.clone();
            grown.push("node-new".into());
            let after_add = assign(SHARDS, &grown);
            let moved_add = before
                .iter()
                .zip(&after_add)
                .filter(|(a, b)| a != b)
                .count();
            assert!(
                after_add
                    .iter()
                    .zip(&before)
                    .filter(|(a, b)| a != b)
                    .all(|(a, _)| a.as_deref() == Some("node-new"))
            );
            let ideal = f64::from(SHARDS) / (n + 1) as f64;
            println!(
                "{n:>5}  {max:>8.2}  {min:>8.2}  {moved_loss:>15}  {moved_add:>14}  {ideal:>10.1}"
            );
            // 1024 shards over n nodes is a draw: the busiest node's share grows with n
            // (about +3 standard deviations of a binomial), but every node gets some.
            assert!(max < 2.5, "n={n}: max/mean {max}");
            assert!(min > 0.0, "n={n}: a node without shards");
        }
    }
}
