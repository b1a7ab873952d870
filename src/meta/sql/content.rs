//! The statements of [`ContentStore`](crate::meta::ContentStore) that both stores
//! run alike: the content row, its upsert and its lifecycle states.

use crate::meta::sql::sql;

sql! {
    CONTENT = "SELECT hash, size, policy, placement, encoding, stored_size FROM content WHERE hash = $1";

    /// Records content and makes it live; returns no row when it is deleting.
    UPSERT_CONTENT = "INSERT INTO content (hash, size, policy, placement, encoding, stored_size) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (hash) DO UPDATE SET policy = excluded.policy, placement = excluded.placement, \
         encoding = excluded.encoding, stored_size = excluded.stored_size, \
         state = 'live', doomed_since_ms = NULL WHERE content.state <> 'deleting' \
         RETURNING size";

    /// The placement index of one hash: cleared, then filled from its placement JSON.
    INDEX_CLEAR = "DELETE FROM placements WHERE hash = $1";

    STATE = "SELECT state, doomed_since_ms FROM content WHERE hash = $1";

    REVIVE = "UPDATE content SET state = 'live', doomed_since_ms = NULL WHERE hash = $1 AND state = 'doomed'";

    /// (`state <> 'live'`, implied by the state asked for, lets the planner use the
    /// partial index `content_by_state`.)
    DOOMED_BEFORE = "SELECT hash, size, policy, placement, encoding, stored_size FROM content \
         WHERE state = 'doomed' AND state <> 'live' AND doomed_since_ms <= $1 AND hash > $2 ORDER BY hash LIMIT $3";

    /// A version, an upload's part or a multipart upload's part points at it.
    REFERENCED = "SELECT EXISTS (SELECT 1 FROM versions WHERE hash = $1) \
         OR EXISTS (SELECT 1 FROM upload_parts WHERE hash = $1) \
         OR EXISTS (SELECT 1 FROM multipart_parts WHERE hash = $1)";

    SET_STATE = "UPDATE content SET state = $2, doomed_since_ms = NULL WHERE hash = $1";

    CLAIM = "INSERT INTO content (hash, size, policy, placement, state) \
         VALUES ($1, 0, $2, '{}', 'deleting') ON CONFLICT (hash) DO NOTHING";

    DELETING = "SELECT hash, size, policy, placement, encoding, stored_size FROM content WHERE state = 'deleting' AND state <> 'live' AND hash > $1 ORDER BY hash LIMIT $2";

    FINISH = "DELETE FROM content WHERE hash = $1 AND state = 'deleting'";

    COUNTS = "SELECT state, count(*) FROM content GROUP BY state";
}
