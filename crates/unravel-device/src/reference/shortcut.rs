//! placeholder: filled in by the shortcut kernel work.
