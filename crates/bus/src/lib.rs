//! Cross-replica publish/subscribe (being written).
