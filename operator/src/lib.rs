//! The `oms-operator` reconciler. Empty until the operator issue lands.
