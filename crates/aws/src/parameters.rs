//! Reads a binary's configuration from SSM Parameter Store: all of its parameters in as few calls
//! as SSM allows, failing with the names of any that are missing.

use std::collections::BTreeMap;

/// SSM's limit on names in one GetParameters call.
const MAX_NAMES_PER_CALL: usize = 10;

/// Why parameters could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParameterError {
    #[error(
        "SSM parameter(s) {names:?} do not exist; expected them provisioned \
         (run titus-provision for the stage, or create them)"
    )]
    Missing { names: Vec<String> },
    #[error("reading SSM parameters {names:?} failed: {message}")]
    Aws { names: Vec<String>, message: String },
}

/// The values of `names`, by name. Every name must exist.
pub async fn get_parameters(
    ssm: &aws_sdk_ssm::Client,
    names: &[String],
) -> Result<BTreeMap<String, String>, ParameterError> {
    let mut values = BTreeMap::new();
    let mut missing = Vec::new();
    for chunk in names.chunks(MAX_NAMES_PER_CALL) {
        let out = ssm
            .get_parameters()
            .set_names(Some(chunk.to_vec()))
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| ParameterError::Aws {
                names: chunk.to_vec(),
                message: aws_sdk_ssm::error::DisplayErrorContext(e).to_string(),
            })?;
        missing.extend(out.invalid_parameters().iter().cloned());
        for parameter in out.parameters() {
            if let (Some(name), Some(value)) = (parameter.name(), parameter.value()) {
                values.insert(name.to_owned(), value.to_owned());
            }
        }
    }
    if !missing.is_empty() {
        missing.sort();
        return Err(ParameterError::Missing { names: missing });
    }
    Ok(values)
}
