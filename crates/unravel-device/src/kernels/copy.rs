//! placeholder: filled in by the copy kernel work.
