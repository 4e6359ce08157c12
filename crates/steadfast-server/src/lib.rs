//! Steadfast's engine and HTTP API.
//!
//! [`api`] is thin: it parses, authenticates, checks the role, calls the
//! [`engine`], and maps errors to stable codes. The engine turns commands into
//! store operations with time from the injected [`clock`].

pub mod api;
pub mod clock;
pub mod engine;
pub mod inbox;
pub mod metrics;
pub mod serve;
pub mod telemetry;
pub mod ui;

pub use api::router;
pub use clock::{Clock, ManualClock, Random, SeededRandom, SystemClock, SystemRandom};
pub use engine::{Engine, EngineConfig};
