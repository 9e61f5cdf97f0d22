//! One module per subcommand.

pub mod bench;
pub mod eval;
pub mod info;
pub mod lesion;
pub mod models;
pub mod paths;
pub mod summary;
pub mod train;
