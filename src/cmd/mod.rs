//! One module per subcommand.

pub mod bench;
pub mod eval;
pub mod info;
pub mod lesion;
pub mod models;
pub mod paths;
pub mod summary;
pub mod train;

/// `--precision`: f32 or mixed.
pub fn parse_precision(name: &str) -> Result<unravel_graph::Precision, String> {
    unravel_graph::Precision::from_name(name).ok_or_else(|| format!("{name:?} is not f32 or mixed"))
}
