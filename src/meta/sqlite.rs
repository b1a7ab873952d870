//! (being written) The SQLite metadata store.
pub struct SqliteStore;
impl SqliteStore {
    pub async fn open(_p: &std::path::Path) -> Result<Self, super::MetaError> { todo!() }
}
#[async_trait::async_trait]
impl super::MetaStore for SqliteStore {
    async fn put_version(&self, _b: &str, _n: &str, _c: Option<&super::ContentRecord>) -> Result<super::VersionRecord, super::MetaError> { todo!() }
    async fn latest(&self, _b: &str, _n: &str) -> Result<Option<super::VersionRecord>, super::MetaError> { todo!() }
    async fn version(&self, _b: &str, _n: &str, _v: u64) -> Result<Option<super::VersionRecord>, super::MetaError> { todo!() }
    async fn versions(&self, _b: &str, _n: &str, _a: u64, _l: usize) -> Result<Vec<super::VersionRecord>, super::MetaError> { todo!() }
    async fn content(&self, _h: &crate::content::ContentHash) -> Result<Option<super::ContentRecord>, super::MetaError> { todo!() }
    async fn set_placement(&self, _h: &crate::content::ContentHash, _p: &crate::content::Placement) -> Result<(), super::MetaError> { todo!() }
    async fn list(&self, _b: &str, _p: &str, _a: Option<&str>, _l: usize) -> Result<Vec<super::VersionRecord>, super::MetaError> { todo!() }
}
