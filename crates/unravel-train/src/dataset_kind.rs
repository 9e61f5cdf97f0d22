//! The datasets Unravel knows, and the input shape and class count each
//! dictates to a model.

use unravel_graph::Shape;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DatasetKind {
    #[default]
    FashionMnist,
    Mnist,
    Cifar10,
    Cifar100,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 4] = [
        DatasetKind::FashionMnist,
        DatasetKind::Mnist,
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
        }
    }

    /// One sample: 1x28x28 for the digit sets, 3x32x32 for CIFAR.
    pub fn input(self) -> Shape {
        match self {
            DatasetKind::FashionMnist | DatasetKind::Mnist => Shape::new(1, 28, 28),
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => Shape::new(3, 32, 32),
        }
    }

    pub fn classes(self) -> usize {
        match self {
            DatasetKind::Cifar100 => 100,
            _ => 10,
        }
    }
}

impl std::str::FromStr for DatasetKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let wanted = s.to_ascii_lowercase().replace('_', "-");
        DatasetKind::ALL
            .into_iter()
            .find(|d| d.name() == wanted || d.name().replace('-', "") == wanted)
            .ok_or_else(|| {
                let names: Vec<&str> = DatasetKind::ALL.iter().map(|d| d.name()).collect();
                format!("unknown dataset {s:?}; use one of {}", names.join(", "))
            })
    }
}

impl std::fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
