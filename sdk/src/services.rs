//! The host services plugins call. In a component (wasm32) each is the contract's
//! import; in a native build, as `cargo test` makes, each is the in-memory stand-in of
//! [`crate::testing`], so a plugin's logic is unit-tested without a host.

use crate::contract::log::Level;
use crate::contract::types::{HttpRequest, HttpResponse};

pub use crate::contract::http_client::HttpError;

/// The tenant-and-plugin-scoped key-value store (rules only).
pub mod kv {
    pub use crate::contract::kv::KvError;

    /// The value stored under `key`, if any.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        #[cfg(target_arch = "wasm32")]
        return crate::contract::kv::get(key);
        #[cfg(not(target_arch = "wasm32"))]
        return crate::testing::stand_in::kv_get(key);
    }

    /// Stores `value` under `key`, replacing any earlier value.
    pub fn set(key: &str, value: &[u8]) -> Result<(), KvError> {
        #[cfg(target_arch = "wasm32")]
        return crate::contract::kv::set(key, value);
        #[cfg(not(target_arch = "wasm32"))]
        return crate::testing::stand_in::kv_set(key, value);
    }

    /// Removes `key`; removing a missing key is not an error.
    pub fn delete(key: &str) -> Result<(), KvError> {
        #[cfg(target_arch = "wasm32")]
        return crate::contract::kv::delete(key);
        #[cfg(not(target_arch = "wasm32"))]
        return crate::testing::stand_in::kv_delete(key);
    }

    /// Adds `delta` to the integer under `key` (absent counts as 0), atomically, and
    /// returns the new value.
    pub fn increment(key: &str, delta: i64) -> Result<i64, KvError> {
        #[cfg(target_arch = "wasm32")]
        return crate::contract::kv::increment(key, delta);
        #[cfg(not(target_arch = "wasm32"))]
        return crate::testing::stand_in::kv_increment(key, delta);
    }
}

/// Milliseconds since the Unix epoch, as the host's flows see it.
pub fn now_millis() -> i64 {
    #[cfg(target_arch = "wasm32")]
    return crate::contract::clock::now_millis();
    #[cfg(not(target_arch = "wasm32"))]
    return crate::testing::stand_in::now_millis();
}

/// Writes a line to the host's log for this plugin (escaped, and within the plugin's
/// log budget).
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::contract::log::write(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::stand_in::log(level, message);
}

/// A plain setting of the tenant's configuration of the plugin.
pub fn config(key: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    return crate::contract::config::get(key);
    #[cfg(not(target_arch = "wasm32"))]
    return crate::testing::stand_in::config(key);
}

/// A secret of the tenant's configuration of the plugin.
pub fn secret(key: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    return crate::contract::config::secret(key);
    #[cfg(not(target_arch = "wasm32"))]
    return crate::testing::stand_in::secret(key);
}

/// Sends `request` to a host the tenant granted (adapters only).
pub fn send(request: &HttpRequest) -> Result<HttpResponse, HttpError> {
    #[cfg(target_arch = "wasm32")]
    return crate::contract::http_client::send(request);
    #[cfg(not(target_arch = "wasm32"))]
    return crate::testing::stand_in::send(request);
}
