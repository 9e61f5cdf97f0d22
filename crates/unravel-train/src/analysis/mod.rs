//! The analyses of "Residual Networks Behave Like Ensembles of Relatively
//! Shallow Networks" (Veit et al. 2016).

pub mod gradient;
pub mod lesion;
pub mod paths;
