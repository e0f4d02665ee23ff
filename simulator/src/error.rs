//! The simulator's errors: what stops a simulation before or while it runs. Errors a running
//! fleet meets (a refused publish, a dropped connection) are counted in the report instead.

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The flags do not describe a simulation.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The node's HTTP API refused or failed a request.
    #[error("api: {0}")]
    Api(String),
    /// A network operation failed.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// An MQTT exchange went wrong.
    #[error("mqtt: {0}")]
    Mqtt(String),
    /// The report could not be written.
    #[error("report {path}: {source}")]
    Report {
        /// Where it was to go.
        path: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl From<reqwest::Error> for SimError {
    fn from(error: reqwest::Error) -> Self {
        // reqwest's message leaves the cause (refused, timed out) to its sources.
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        SimError::Api(message)
    }
}
