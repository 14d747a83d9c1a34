//! Prints a JSON array of N sample events (`sample_bulk [N=1000]`): the body the bulk load
//! test posts, identical to what `raw_insert` inserts. Used by `scripts/bench.sh`.

fn main() {
    let count = std::env::args()
        .nth(1)
        .map_or(1000, |n| n.parse().expect("N is a number"));
    println!("{}", vigil_benches::sample_bulk(count));
}
