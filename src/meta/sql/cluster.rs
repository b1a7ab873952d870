//! The statements of [`ClusterStore`](crate::meta::ClusterStore) that both stores
//! run alike: placements, sightings, leases and worker checkpoints.

use crate::meta::sql::sql;

sql! {
    CONTENTS_ON = "SELECT c.hash, c.size, c.policy, c.placement, c.encoding, c.stored_size FROM \
         (SELECT DISTINCT hash FROM placements WHERE server = $1 AND hash > $2 ORDER BY hash LIMIT $3) p \
         JOIN content c ON c.hash = p.hash ORDER BY c.hash";

    PLACEMENT_SERVERS = "SELECT server, count(*) FROM placements GROUP BY server ORDER BY server";

    SIGHTINGS = "SELECT server, last_seen_ms FROM server_sightings ORDER BY server";

    FORGET = "DELETE FROM server_sightings WHERE server = $1";

    RELEASE = "DELETE FROM leases WHERE name = $1 AND holder = $2";

    CURSOR = "SELECT value FROM worker_cursors WHERE name = $1";

    SET_CURSOR = "INSERT INTO worker_cursors (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value";

    CLEAR_CURSOR = "DELETE FROM worker_cursors WHERE name = $1";

    SET_PLACEMENT = "UPDATE content SET placement = $2 WHERE hash = $1";
}
