//! The bus behavioural suite (`tests/common/bus_suite.rs`) over the in-process
//! broker that `cairn dev` uses: one [`MemoryBroker`] per case, one
//! [`MemoryTransport`](cairn::bus::memory::MemoryTransport) per "process".

#[path = "common/bus_suite.rs"]
mod bus_suite;

use std::sync::Arc;
use std::time::Duration;

use bus_suite::Connect;
use cairn::bus::memory::MemoryBroker;
use cairn::bus::{Bus, Transport};
use tokio_util::sync::CancellationToken;

/// Every case is bounded: a hung bus fails the test instead of the run.
const CASE_LIMIT: Duration = Duration::from_secs(30);

fn memory() -> Connect {
    let broker = MemoryBroker::new();
    Arc::new(move |_shutdown| {
        let transport: Arc<dyn Transport> = Arc::new(broker.connect());
        Box::pin(async move { transport })
    })
}

async fn bounded(case: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(CASE_LIMIT, case).await.expect("the case finishes in time");
}

#[tokio::test]
async fn heartbeats_fan_out_to_every_subscriber() {
    bounded(bus_suite::heartbeats_fan_out_to_every_subscriber(memory())).await;
}

#[tokio::test]
async fn locate_replies_are_routed_by_correlation_id() {
    bounded(bus_suite::locate_replies_are_routed_by_correlation_id(memory())).await;
}

#[tokio::test]
async fn malformed_messages_are_dropped_and_the_next_good_ones_still_arrive() {
    bounded(bus_suite::malformed_messages_are_dropped_and_the_next_good_ones_still_arrive(memory())).await;
}

#[tokio::test]
async fn a_reply_for_a_finished_locate_is_ignored() {
    bounded(bus_suite::a_reply_for_a_finished_locate_is_ignored(memory())).await;
}

#[tokio::test]
async fn invalid_addresses_and_shard_lists_are_dropped() {
    bounded(bus_suite::invalid_addresses_and_shard_lists_are_dropped(memory())).await;
}

#[tokio::test]
async fn the_bus_tasks_end_on_shutdown() {
    let shutdown = CancellationToken::new();
    let broker = MemoryBroker::new();
    let bus = Bus::new(Arc::new(broker.connect()), shutdown.clone()).await.unwrap();
    let mut heartbeats = bus.heartbeats().await.unwrap();
    let _requests = bus.locate_requests().await.unwrap();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), bus.stopped()).await.expect("every bus task ends");
    assert!(heartbeats.recv().await.is_none(), "the heartbeat stream ends with the bus");
}
