//! One module per subcommand.

pub mod info;
pub mod models;
pub mod summary;
