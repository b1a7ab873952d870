//! What the data server tells the cluster over the bus: heartbeats (its address
//! and free space, every `heartbeat_interval`) and the answers to locate requests
//! (which shards of a content it holds). Started by [`super::serve`].

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::store::{ShardStore, StoreError};
use super::{blocking, DataConfig};
use crate::bus::{Bus, Heartbeat, LocateReply};

pub(super) async fn heartbeat(bus: Bus, store: ShardStore, config: DataConfig, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let free = match blocking(store.clone(), |s| s.free_bytes().map_err(StoreError::Io)).await {
            Ok(free) => free,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read free space; announcing 0");
                0
            }
        };
        match bus.publish_heartbeat(&Heartbeat { addr: config.advertise.clone(), free }).await {
            Ok(()) if failing => {
                tracing::info!("heartbeats flow again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(error = %e, "heartbeat not sent; will keep trying");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

pub(super) async fn answer_locates(
    bus: Bus,
    mut requests: mpsc::Receiver<crate::bus::IncomingLocate>,
    store: ShardStore,
    addr: String,
    shutdown: CancellationToken,
) {
    loop {
        let request = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = requests.recv() => match r { Some(r) => r, None => return },
        };
        let hash = request.request.hash;
        let shards = match blocking(store.clone(), move |s| s.shards_of(&hash)).await {
            Ok(shards) => shards,
            Err(e) => {
                tracing::warn!(error = %e, %hash, "locate: cannot list shards; answering none");
                Vec::new()
            }
        };
        if let Err(e) = bus.reply(&request, &LocateReply { addr: addr.clone(), shards }).await {
            tracing::warn!(error = %e, "locate reply not sent");
        }
    }
}
