//! The integration suite: one test binary (see host/Cargo.toml) driving the
//! real `notify-host` binary, the real compiled plugins, and real HTTP
//! servers on 127.0.0.1. Build the plugins first: ./scripts/test.sh does.

mod api;
mod authoring;
mod chaos;
mod classify;
mod cli;
mod config_golden;
mod container;
mod contract;
mod fuzz;
mod hardening;
mod harness;
mod hostile;
mod kafka_harness;
mod ledger;
mod ledger_suite;
mod ops;
mod outage;
mod pg_harness;
mod pipeline;
mod polyglot;
mod rebalance;
mod reload;
mod reminders;
mod replay;
mod replicas;
mod sandbox;
mod secrets;
mod spec;
mod vendors;
