//! The OMS pod binary. Empty until the runtime issue lands.
