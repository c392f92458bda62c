//! The `OrderSystem` custom resource API. Empty until the operator issue lands.
