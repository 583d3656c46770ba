//! Job and task identifiers: UUIDs, kept as strings on the wire and in the store.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A fresh random id.
            pub fn generate() -> Self {
                Self(uuid::Uuid::new_v4().to_string())
            }

            /// Wraps an id read from storage or a request; the text is not checked here.
            pub fn from_string(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Whether the text has the shape of an id this platform issues (a UUID).
            pub fn is_well_formed(text: &str) -> bool {
                uuid::Uuid::try_parse(text).is_ok()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// Identifies a job.
    JobId
);
id_type!(
    /// Identifies a task, one run of a job's container.
    TaskId
);

/// Namespace for ids derived from other ids, so that retrying a write re-creates the same id.
const DERIVED_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x7f1c_5a3e_92d4_4b8e_a6c1_3d0e_5f27_9b41);

impl TaskId {
    /// The id of a job's first task in slot `index`. Deterministic, so a job whose creation was
    /// interrupted and retried gets the same tasks, never a second set.
    pub fn for_initial_slot(job_id: &JobId, index: u32) -> TaskId {
        Self::derived(&format!("job/{job_id}/slot/{index}"))
    }

    /// The id of the task that replaces `previous`. Deterministic, so a status message processed
    /// twice cannot create two replacements.
    pub fn for_replacement_of(previous: &TaskId) -> TaskId {
        Self::derived(&format!("replacement-of/{previous}"))
    }

    fn derived(name: &str) -> TaskId {
        TaskId(uuid::Uuid::new_v5(&DERIVED_ID_NAMESPACE, name.as_bytes()).to_string())
    }
}
