//! The lifecycle's part of a node record: where the node is ([`State`]), what it deploys
//! ([`DeployTarget`]) and the step's bookkeeping ([`Lifecycle`]). Data only, kept here below
//! the state machine (`crate::lifecycle`, which moves it) so that the record does not depend
//! on the machine: `lifecycle` imports `inventory`, never the other way.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a node is in its life. Failed states keep why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum State {
    /// Known, credentials not yet checked.
    #[default]
    Enroll,
    /// Checking that the BMC answers with these credentials.
    Verifying,
    Manageable,
    Inspecting,
    InspectFailed {
        reason: String,
    },
    /// Ready to be deployed.
    Available,
    Deploying,
    DeployFailed {
        reason: String,
    },
    /// Running its image.
    Active,
    /// Being powered off and torn down before cleaning.
    Deleting,
    /// Disks being wiped.
    Cleaning,
    CleanFailed {
        reason: String,
    },
}

impl State {
    /// The state's name as people read it (`deploy failed`).
    pub fn name(&self) -> &'static str {
        match self {
            State::Enroll => "enroll",
            State::Verifying => "verifying",
            State::Manageable => "manageable",
            State::Inspecting => "inspecting",
            State::InspectFailed { .. } => "inspect failed",
            State::Available => "available",
            State::Deploying => "deploying",
            State::DeployFailed { .. } => "deploy failed",
            State::Active => "active",
            State::Deleting => "deleting",
            State::Cleaning => "cleaning",
            State::CleanFailed { .. } => "clean failed",
        }
    }

    /// The reason of a failed state.
    pub fn reason(&self) -> Option<&str> {
        match self {
            State::InspectFailed { reason }
            | State::DeployFailed { reason }
            | State::CleanFailed { reason } => Some(reason),
            _ => None,
        }
    }

    /// A step is running and a report or a timeout is awaited.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            State::Verifying
                | State::Inspecting
                | State::Deploying
                | State::Deleting
                | State::Cleaning
        )
    }

    /// A failed state (including `enroll` after a failed verification is not counted here).
    pub fn is_failed(&self) -> bool {
        self.reason().is_some()
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to deploy: an image name and an optional root-device hint (`serial=…`, `size>=…`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployTarget {
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_hint: Option<String>,
}

/// The lifecycle part of a node record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    #[serde(flatten)]
    pub state: State,
    /// `Some(reason)` while in maintenance (the reason may be empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<String>,
    /// The last failure, `"<step> failed: <reason>"`; cleared when a step next succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the running step times out (ms, same clock as the events' `now`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Bumped each time a long-running step starts. Executors tag reports with it so that a
    /// late report from an abandoned attempt can be recognised and dropped.
    #[serde(default)]
    pub op: u64,
    /// Consecutive attempts of the current (or last failed) step; 0 after a success.
    #[serde(default)]
    pub attempts: u32,
    /// What is deployed, or being deployed, on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<DeployTarget>,
    /// The pending clean wipes whole disks, not just tables and partition edges.
    #[serde(default)]
    pub wipe_full: bool,
    /// While deploying: the agent reported the image written and the node was told to boot
    /// from disk; the step now waits for the image's first boot to say "booted".
    #[serde(default)]
    pub image_written: bool,
    /// While a step waits for the node to PXE-boot toward the seed: when the boot watchdog
    /// power-cycles it again (ms). Cleared by [`crate::lifecycle::Event::BootSeen`] and when
    /// the step ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_deadline_ms: Option<u64>,
    /// Power-cycles the boot watchdog made in the current (or last) step; 0 when a step starts.
    #[serde(default)]
    pub boot_retries: u32,
    /// While verifying: `inspect` was asked from `enroll`, so a successful verification goes on
    /// to inspect. Kept in the store (not in a daemon's memory), so a restarted daemon or a new
    /// HA leader honours it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inspect_after_verify: bool,
}
