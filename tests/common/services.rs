//! Whether the services the tests use are there: a missing one makes a test say
//! SKIPPED loudly, or fail under `CAIRN_REQUIRE_SERVICES=1` (CI). Shared by path
//! with the bench crate's harness (`crates/bench/tests/common`), which cannot
//! use the rest of this one (it spawns `CARGO_BIN_EXE_cairn`).

use std::time::Duration;

/// Whether tests must fail (CI) rather than skip when a service is missing.
pub fn services_required() -> bool {
    std::env::var("CAIRN_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The broker the multi-process tests use.
pub const BROKER_URL: &str = "amqp://guest:guest@127.0.0.1:5672";

/// Whether RabbitMQ answers on 127.0.0.1:5672. When it does not: panics under
/// `CAIRN_REQUIRE_SERVICES=1` (CI), otherwise says SKIPPED loudly and returns false.
pub async fn rabbitmq_reachable(test: &str) -> bool {
    let probe = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect("127.0.0.1:5672")).await;
    let why = match probe {
        Ok(Ok(_)) => return true,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "connect timed out".to_string(),
    };
    if services_required() {
        panic!("{test}: RabbitMQ not reachable at 127.0.0.1:5672 ({why}) and CAIRN_REQUIRE_SERVICES=1");
    }
    eprintln!("SKIPPED {test}: RabbitMQ not reachable at 127.0.0.1:5672 ({why}); set CAIRN_REQUIRE_SERVICES=1 to fail instead");
    false
}
