//! The node lifecycle as a sans-IO state machine: events in, actions out.
