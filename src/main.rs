//! The `doppel` command line.
fn main() {}
