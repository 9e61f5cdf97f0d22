//! One module per subcommand.

pub mod bench;
pub mod info;
pub mod models;
pub mod summary;
