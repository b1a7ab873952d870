//! `cairn-bench`: cairn's measurement machinery, kept out of the server. Two rooms:
//!
//! - [`load`], the load generator (`cairn-bench load`, in the spirit of MinIO's
//!   `warp`): one endpoint, one operation mix, one [`load::BenchReport`].
//! - The suite (`cairn-bench suite`), the standard benchmark matrix and its report:
//!   it runs the load generator cell by cell against clusters it starts itself
//!   ([`suite`]: `cairn dev` in this process, and the multi-process layout by
//!   spawning the `cairn` binary), measures the machine's ceilings in the same run
//!   ([`ceilings`], from [`machine`] facts read in `/proc`), makes a crash run
//!   ([`crash`]: `kill -9` data servers under load, then read back everything
//!   acknowledged) and writes a Markdown report ([`markdown`]): `BENCH.md`. Issue
//!   9's measurements of small-shard storage ([`small_shards`]: fsync calls per PUT
//!   under strace and perf, disk per small object, memory and restart at scale,
//!   files versus volumes) run after the matrix, reading the system through
//!   [`probes`].
//!
//! The binary `cairn-bench` has one subcommand per room (`load`, `suite`). The three
//! one-off design measurements stay binaries of their own (`src/bin`:
//! `cairn-compression-bench`, `cairn-reprotect-bench`, `cairn-s3-bench`): each
//! answered one issue's question, is run by hand and writes its own section, and
//! none shares flags with the others, so as subcommands they would only lengthen
//! `cairn-bench --help` and change the commands BENCH.md names for them.
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
pub mod plan;
pub mod probes;
pub mod small_shards;
pub mod space;
pub mod suite;
