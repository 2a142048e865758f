//! The deploy agent that runs in the ramdisk: brings up the network, reports the machine's
//! facts to the seed's agent API, heartbeats, and carries out the seed's commands.
//!
//! The wire protocol ([`api::agent`], re-exported here: JSON over HTTP, base URL from the
//! kernel command line `seed.url=`; every agent call carries `Authorization: Bearer <token>`
//! with the per-boot token of `seed.token=`, without which the seed answers 401):
//! - `POST {url}/v1/agent/facts` with [`Report`] → [`Ack`];
//! - `POST {url}/v1/agent/heartbeat` with [`Heartbeat`] → [`Command`];
//! - `POST {url}/v1/agent/progress` with [`Progress`] → [`Command`] (during a deploy or a wipe:
//!   phase, bytes written; the last one says done or failed with the reason);
//! - from the deployed image's first boot: `POST {url}/v1/node/booted` with
//!   `Authorization: Bearer <credential>` (the credential is in the identity file the deploy
//!   wrote on the state partition, see [`images::Identity`]).

pub mod deploy;
pub mod facts;
pub mod wipe;

pub use api::agent::{
    Ack, Command, DeployCommand, Heartbeat, KernelArgs, Phase, Progress, Report, WipeCommand,
    WipeDisk, WipeExtent,
};
