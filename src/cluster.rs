//! Fan-out over a cluster's job array: which model of the plan a task trains.
//! Slurm numbers array tasks in SLURM_ARRAY_TASK_ID, a Kubernetes Indexed Job
//! its pods in JOB_COMPLETION_INDEX (docs/cluster.md).

use crate::error::{Error, Result};

/// Where an array task finds its index when `--index` is not given, in order.
const INDEX_VARIABLES: [&str; 2] = ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"];

/// The model index a task trains: `given`, else the first index variable set
/// in `env`; it must be below `planned`.
pub fn task_index(
    given: Option<usize>,
    env: impl Fn(&str) -> Option<String>,
    planned: usize,
) -> Result<usize> {
    let (index, origin) = match given {
        Some(index) => (index, "--index"),
        None => {
            let found = INDEX_VARIABLES.iter().find_map(|name| {
                env(name)
                    .filter(|value| !value.is_empty())
                    .map(|value| (*name, value))
            });
            let Some((name, value)) = found else {
                return Err(Error::usage(
                    "--index",
                    "not given, and neither SLURM_ARRAY_TASK_ID nor JOB_COMPLETION_INDEX holds a value",
                ));
            };
            let index = value
                .trim()
                .parse()
                .map_err(|_| Error::usage(name, format!("'{value}' is not a whole number")))?;
            (index, name)
        }
    };
    if planned == 0 {
        return Err(Error::usage(origin, "the plan has no models"));
    }
    if index >= planned {
        return Err(Error::usage(
            origin,
            format!(
                "model {index} is out of range: the plan has {planned} models (0 to {})",
                planned - 1
            ),
        ));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(given: Option<usize>, vars: &[(&str, &str)]) -> Result<usize, String> {
        let env = |name: &str| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        };
        task_index(given, env, 3).map_err(|err| err.to_string())
    }

    #[test]
    fn the_flag_wins_then_slurm_then_kubernetes() {
        let both = [("SLURM_ARRAY_TASK_ID", "1"), ("JOB_COMPLETION_INDEX", "2")];
        assert_eq!(index(Some(0), &both), Ok(0));
        assert_eq!(index(None, &both), Ok(1));
        assert_eq!(index(None, &both[1..]), Ok(2));
        assert_eq!(index(None, &[("SLURM_ARRAY_TASK_ID", ""), both[1]]), Ok(2));
    }

    #[test]
    fn a_missing_bad_or_out_of_range_index_is_named() {
        assert_eq!(
            index(None, &[]).unwrap_err(),
            "--index: not given, and neither SLURM_ARRAY_TASK_ID nor JOB_COMPLETION_INDEX holds a value"
        );
        assert_eq!(
            index(None, &[("JOB_COMPLETION_INDEX", "x")]).unwrap_err(),
            "JOB_COMPLETION_INDEX: 'x' is not a whole number"
        );
        assert_eq!(
            index(None, &[("SLURM_ARRAY_TASK_ID", "3")]).unwrap_err(),
            "SLURM_ARRAY_TASK_ID: model 3 is out of range: the plan has 3 models (0 to 2)"
        );
        assert_eq!(
            index(Some(7), &[]).unwrap_err(),
            "--index: model 7 is out of range: the plan has 3 models (0 to 2)"
        );
    }
}
