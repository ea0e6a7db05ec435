//! The serverless platform: one gateway in front of many deployments.
//!
//! A deployment is a model (run by `thaw worker` processes) or an external
//! OpenAI-compatible server (any command). Replicas start on the first request (cold
//! start), scale up with queue depth, stop after an idle timeout (scale to zero), and
//! are replaced when they crash. Every request is authenticated by an API key (stored
//! hashed), rate limited, and metered into a SQLite usage ledger from the token counts
//! the replica reports. The gateway never runs a model itself.

#![forbid(unsafe_code)]

mod auth;
pub mod config;
mod error;
mod gateway;
mod metrics;
mod pool;
mod proxy;
pub mod replica;
pub mod store;
#[cfg(test)]
mod tests;

pub use config::{Config, ConfigError, DeploymentSpec};
pub use gateway::{Gateway, GatewayStartError, app, run};
pub use pool::{DeploymentView, ReplicaView};
pub use proxy::REQUEST_ID_HEADER;
pub use replica::{Launcher, READY_LINE};
pub use store::{Store, StoreError};
