//! Bus messages as a rogue or broken peer could send them: heartbeats, locate
//! replies, locate requests, and the `host:port` rule for data-server addresses.
//! A forged message decodes to an error or to a value that passed every check;
//! what decodes encodes back to itself; and a closed bus (a cluster secret) takes
//! no envelope the fuzzer can make.
#![no_main]

use std::collections::HashSet;

use std::sync::OnceLock;

use cairn::bus::{self, Delivery, LocateRequest, MessageKind};
use cairn::secret::{ClusterSecret, Verifier};
use libfuzzer_sys::fuzz_target;

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        Verifier::new(ClusterSecret::from_text("the fuzzer's cluster secret, 32 bytes or more").unwrap())
    })
}

fuzz_target!(|data: &[u8]| {
    let d = Delivery { body: data.to_vec().into(), reply_to: Some("q".into()), correlation_id: Some("c".into()) };
    for kind in [MessageKind::Heartbeat, MessageKind::LocateRequest, MessageKind::LocateReply] {
        assert!(bus::authenticate(Some(verifier()), kind, &d).is_err(), "a forged envelope passed");
    }
    if let Ok(hb) = bus::decode_heartbeat(data) {
        assert_eq!(bus::validate_addr(&hb.addr), Ok(()));
        assert_eq!(bus::decode_heartbeat(&serde_json::to_vec(&hb).unwrap()).unwrap(), hb);
    }
    if let Ok(reply) = bus::decode_locate_reply(data) {
        assert_eq!(bus::validate_addr(&reply.addr), Ok(()));
        assert!(reply.shards.len() <= bus::MAX_REPLY_SHARDS);
        assert_eq!(reply.shards.iter().collect::<HashSet<_>>().len(), reply.shards.len());
        assert_eq!(bus::decode_locate_reply(&serde_json::to_vec(&reply).unwrap()).unwrap(), reply);
    }
    if let Ok(request) = serde_json::from_slice::<LocateRequest>(data) {
        let again: LocateRequest = serde_json::from_slice(&serde_json::to_vec(&request).unwrap()).unwrap();
        assert_eq!(again, request);
    }
    if let Ok(addr) = std::str::from_utf8(data) {
        if bus::validate_addr(addr).is_ok() {
            // The object paths put the address into a URL: it must stay a host and port.
            let url = reqwest::Url::parse(&format!("http://{addr}/objects/x")).expect("accepted address makes a URL");
            assert_eq!(url.path(), "/objects/x");
            assert!(url.username().is_empty() && url.password().is_none() && url.query().is_none());
            let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
            assert_eq!(url.port_or_known_default(), Some(port));
        }
    }
});
