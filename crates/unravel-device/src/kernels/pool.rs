//! placeholder: filled in by the pool kernel work.
