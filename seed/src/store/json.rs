//! Records as JSON: the one encoding every typed layer over the store uses, with errors that
//! name the table and key of the record that failed.

use super::StoreError;
use serde::{de::DeserializeOwned, Serialize};

/// The record `table/key` read back as a `T`.
pub fn decode<T: DeserializeOwned>(table: &str, key: &str, b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|source| StoreError::Decode {
        table: table.into(),
        key: key.into(),
        source,
    })
}

/// `v` as the bytes of record `table/key`.
pub fn encode<T: Serialize>(table: &str, key: &str, v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|source| StoreError::Encode {
        table: table.into(),
        key: key.into(),
        source,
    })
}
