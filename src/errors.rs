//! Errors as a user of the command line reads them: the libraries name the
//! setting or value that is wrong, never a flag; here settings become the
//! flags that set them, with what to do next.

use std::error::Error;

use unravel_train::data::DataError;
use unravel_train::models::ModelError;
use unravel_train::run_folder::RunFolderError;
use unravel_train::trainer::TrainError;

/// `error`'s chain of causes, joined by ": " as anyhow's `{:#}` does, with
/// every cause the CLI can say in its own terms said so.
pub fn describe(error: &anyhow::Error) -> String {
    error
        .chain()
        .map(|cause| in_cli_terms(cause).unwrap_or_else(|| cause.to_string()))
        .collect::<Vec<_>>()
        .join(": ")
}

/// The flag that sets a training setting (a field of `TrainOptions`).
fn flag(setting: &str) -> String {
    format!("--{}", setting.replace('_', "-"))
}

fn in_cli_terms(cause: &(dyn Error + 'static)) -> Option<String> {
    if let Some(e) = cause.downcast_ref::<TrainError>() {
        return match e {
            TrainError::InvalidSetting { setting, reason } => {
                Some(format!("{}: {reason}", flag(setting)))
            }
            TrainError::Diverged { .. } => Some(format!(
                "{e}. Try a lower --lr or a warm-up (--warmup-epochs)."
            )),
            TrainError::RunFolder(folder) => folder_terms(folder),
            TrainError::Data(data) => data_terms(data),
            TrainError::Model(model) => model_terms(model),
            _ => None,
        };
    }
    if let Some(folder) = cause.downcast_ref::<RunFolderError>() {
        return folder_terms(folder);
    }
    if let Some(model) = cause.downcast_ref::<ModelError>() {
        return model_terms(model);
    }
    cause.downcast_ref::<DataError>().and_then(data_terms)
}

fn folder_terms(e: &RunFolderError) -> Option<String> {
    match e {
        RunFolderError::HoldsARun { dir } => Some(format!(
            "{e}: continue it with `--resume {0}`, or replace it with `--out {0} --overwrite`",
            dir.display()
        )),
        RunFolderError::NoCheckpoint { dir } => Some(format!(
            "{} holds no checkpoint: give a run folder written by `unravel train`",
            dir.display()
        )),
        RunFolderError::Locked { .. } => Some(format!(
            "{e}; wait for that run to end, or train into another --out"
        )),
        _ => None,
    }
}

fn model_terms(e: &ModelError) -> Option<String> {
    match e {
        ModelError::UnknownModel { name, hint } => Some(format!(
            "unknown model {name:?} ({hint}); run `unravel models` for the list"
        )),
        _ => None,
    }
}

fn data_terms(e: &DataError) -> Option<String> {
    match e {
        DataError::NoDataDir { .. } | DataError::Missing { .. } => {
            Some(format!("{e} (the data folder is --data-dir DIR)"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_named_by_their_flags() {
        let e = anyhow::Error::new(TrainError::InvalidSetting {
            setting: "batch_size",
            reason: "must be positive".into(),
        });
        assert_eq!(describe(&e), "--batch-size: must be positive");
        let e = anyhow::Error::new(TrainError::Diverged {
            what: "the training loss".into(),
            value: f32::NAN,
            epoch: 1,
            step: 3,
            lr: 0.5,
            kept: unravel_train::trainer::Kept::Nothing,
        })
        .context("training");
        let text = describe(&e);
        assert!(
            text.starts_with("training: the training loss became NaN"),
            "{text}"
        );
        assert!(text.contains("no checkpoint was kept"), "{text}");
        assert!(
            text.ends_with("Try a lower --lr or a warm-up (--warmup-epochs)."),
            "{text}"
        );
    }
}
