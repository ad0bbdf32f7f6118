//! Integration tests: the gateway over real HTTP in front of real simulators.

mod passthrough;
mod support;
