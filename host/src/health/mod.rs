//! Channel health: each configured channel's circuit, throttle and rate
//! limit, in front of its provider.
//!
//! Invariants:
//! - A send goes out only through its channel's gate ([`ChannelGate::admit`]),
//!   and reports how it went ([`Permit::finish`]); the circuit (see
//!   [`circuit`]) decides from those reports when the provider, not an event,
//!   is failing.
//! - While a channel is not healthy its sends wait at the gate, holding their
//!   events in flight: nothing is dead-lettered or committed past them, and
//!   the pipeline's in-flight limit turns the wait into backpressure on
//!   Kafka, however long the outage lasts.
//! - Failures seen while the channel is not healthy are not counted against
//!   any event's attempts.

pub mod circuit;
mod gate;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use circuit::{CircuitPolicy, Signal, State};
pub use gate::{ChannelGate, ChannelHealth, Permit, Rate};

use crate::config::Config;
use crate::metrics::Metrics;

/// Every configured channel's gate.
#[derive(Debug, Default)]
pub struct Health {
    gates: BTreeMap<String, Arc<ChannelGate>>,
}

impl Health {
    /// A gate for every enabled channel of `config`.
    pub fn new(config: &Config, metrics: &Arc<Metrics>) -> Self {
        let gates = config
            .enabled_channels()
            .map(|c| {
                (
                    c.name.clone(),
                    Arc::new(ChannelGate::new(
                        &c.name,
                        c.circuit,
                        c.rate,
                        metrics.clone(),
                    )),
                )
            })
            .collect();
        Health { gates }
    }

    pub fn get(&self, channel: &str) -> Option<&Arc<ChannelGate>> {
        self.gates.get(channel)
    }

    /// Each channel's state, for readiness.
    pub fn report(&self) -> Vec<ChannelHealth> {
        self.gates.values().map(|g| g.health()).collect()
    }
}
