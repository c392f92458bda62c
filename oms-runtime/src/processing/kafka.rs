//! Kafka roles (next).
