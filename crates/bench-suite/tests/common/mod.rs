//! What the suite's tests need of a test harness: whether RabbitMQ answers, skipping
//! loudly when it does not (failing under `CAIRN_REQUIRE_SERVICES=1`). The checks
//! are the cairn package's own (`tests/common/services.rs`), included by path: the
//! rest of that harness spawns `CARGO_BIN_EXE_cairn`, which Cargo defines only for
//! the cairn package's tests.

#[path = "../../../../tests/common/services.rs"]
mod services;

// Not every test binary uses every check.
#[allow(unused_imports)]
pub use services::{rabbitmq_reachable, services_required, BROKER_URL};
