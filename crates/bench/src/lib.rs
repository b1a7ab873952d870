//! `cairn-bench`: cairn's measurement machinery, the load generator ([`load`]) and
//! the standard benchmark matrix of cairn and its report.
//!
//! The suite runs the load generator cell by cell against clusters it starts itself ([`suite`]: `cairn
//! dev` in this process, and the multi-process layout by spawning the `cairn`
//! binary), measures the machine's ceilings in the same run ([`ceilings`], from
//! [`machine`] facts read in `/proc`), makes a crash run ([`crash`]: `kill -9` data
//! servers under load, then read back everything acknowledged) and writes a Markdown
//! report ([`markdown`]): `BENCH.md`. Issue 9's measurements of small-shard storage ([`small_shards`]:
//! fsync calls per PUT under strace and perf, disk per small object, memory and restart at
//! scale, files versus volumes) run after the matrix, reading the system through
//! [`probes`].
//!
//! It is a workspace member of its own so that the direction is enforced by Cargo:
//! this crate depends on the `cairn` library, and nothing in `cairn` (the servers
//! least of all) can depend on this one.

pub mod args;
pub mod ceilings;
pub mod crash;
mod layout;
pub mod load;
pub mod machine;
pub mod markdown;
pub mod probes;
pub mod small_shards;
pub mod space;
pub mod suite;
