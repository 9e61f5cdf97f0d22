//! placeholder: filled in by the sgd kernel work.
