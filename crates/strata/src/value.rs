//! What the cache holds, on the ground floor: the values callers cache, as L1 keeps them and
//! as they come out of L2 or a loader.

use std::any::Any;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::envelope::Times;
use crate::error::{Error, Result};

/// What can be cached: any owned, thread-safe, serde type.
pub trait CacheValue: Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> CacheValue for T {}

/// A value as L1 keeps it: the decoded `Arc<T>`, type-erased so one cache can hold many types.
/// `None` is a negative entry ("not found").
pub(crate) type Value = Option<Arc<dyn Any + Send + Sync>>;

/// An entry read from L2.
pub(crate) struct Found {
    pub(crate) value: Value,
    pub(crate) times: Times,
    pub(crate) tags: Vec<String>,
    /// How long the load that produced it took (XFetch's δ).
    pub(crate) load_ms: u32,
    /// Its encoded size in bytes (0 when it was never encoded), for an L1 bounded by bytes.
    pub(crate) size: u32,
    /// The envelope's stamp, when it came from one: what a refresh's fill must still find.
    pub(crate) stamp: Option<u64>,
}

/// Downcasts an L1 value to the caller's type.
#[inline]
pub(crate) fn typed<T: CacheValue>(key: &str, value: Value) -> Result<Option<Arc<T>>> {
    value
        .map(|v| {
            v.downcast::<T>().map_err(|_| Error::TypeMismatch {
                key: key.to_owned(),
                expected: std::any::type_name::<T>(),
            })
        })
        .transpose()
}
