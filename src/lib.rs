//! cairn: a distributed object store.
//!
//! Stateless API servers ([`api`]: the native REST door, tus, S3 and `/admin`, one
//! access policy for all four) give clients their interfaces; data servers ([`data`])
//! keep the bytes as content-addressed shards, in files or volumes, and speak the
//! protocol written once in [`data::wire`] to the API tier's [`data::client`]; the two
//! tiers find each other over a bus ([`bus`]: RabbitMQ, or in-process for `cairn
//! dev`). The API tier keeps the name → version → content mapping in a metadata store
//! ([`meta`]: one SQL catalogue run by a SQLite and a PostgreSQL executor). The write
//! and read paths live in [`object`]; who is alive and who holds what in [`cluster`];
//! the background workers ([`worker`]'s one shape) in [`maintenance`] and [`data`].
//! [`client`] and [`admin`] are the command-line clients of an API server, on top of
//! everything. [`clock`] and [`report`] are leaves any room may use: the timestamp
//! cairn records, and how errors and URLs are written into messages. The load
//! generator and the benchmark suite are another crate (`crates/bench`), which uses
//! this one and which nothing here uses.
//!
//! # Layers
//!
//! Each room (top-level module) may use only the rooms on the lines below its own;
//! rooms on one line do not use each other. `tests/architecture.rs` reads this table
//! and fails on an import that runs up it, on a room missing from it, and on any
//! circle of modules anywhere in the workspace.
//! `cli` is not a module of the library but of the `cairn` binary (`src/main.rs`):
//! its flags and runners, listed here because its files sit under `src/`.
//!
//! ```text
//! binary:     cli
//! programs:   admin
//!             client dev
//! doors:      api
//! upkeep:     maintenance
//! paths:      object
//! tiers:      cluster data
//! services:   bus meta server worker
//! wire:       codec secret tls
//! leaves:     clock content filestamp range report shutdown size telemetry
//! ```

pub mod admin;
pub mod api;
pub mod bus;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod codec;
pub mod content;
pub mod data;
pub mod dev;
pub mod filestamp;
pub mod maintenance;
pub mod meta;
pub mod object;
pub mod range;
pub mod report;
pub mod secret;
pub mod server;
pub mod shutdown;
pub mod size;
pub mod telemetry;
pub mod tls;
pub mod worker;
