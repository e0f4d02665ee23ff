//! Errors: `ShadowError` is a rejection in the AWS Device Shadow vocabulary (status code and
//! message, sent back to the requester); `TwinError` covers everything else twin-core refuses.

use std::borrow::Cow;

/// A rejected shadow request, with the AWS IoT Device Shadow status code and message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ShadowError {
    /// HTTP-style status code, as AWS uses in `…/rejected` payloads.
    pub code: u16,
    /// The AWS message text (or, for schema violations, the failing path and reason).
    pub message: Cow<'static, str>,
}

impl ShadowError {
    const fn fixed(code: u16, message: &'static str) -> Self {
        Self {
            code,
            message: Cow::Borrowed(message),
        }
    }

    /// 400: the payload is not a JSON object.
    pub const fn invalid_json() -> Self {
        Self::fixed(400, "Invalid JSON")
    }
    /// 400: an update without a `state` node.
    pub const fn missing_state() -> Self {
        Self::fixed(400, "Missing required node: state")
    }
    /// 400: `state` is neither an object nor null.
    pub const fn state_not_object() -> Self {
        Self::fixed(400, "State node must be an object")
    }
    /// 400: `state.desired` is neither an object nor null.
    pub const fn desired_not_object() -> Self {
        Self::fixed(400, "Desired node must be an object")
    }
    /// 400: `state.reported` is neither an object nor null.
    pub const fn reported_not_object() -> Self {
        Self::fixed(400, "Reported node must be an object")
    }
    /// 400: `version` is not a non-negative integer.
    pub const fn invalid_version() -> Self {
        Self::fixed(400, "Invalid version")
    }
    /// 400: `clientToken` is not a string of at most 64 bytes.
    pub const fn invalid_client_token() -> Self {
        Self::fixed(400, "Invalid clientToken")
    }
    /// 400: a section nests deeper than the limit.
    pub fn too_deep(max: usize) -> Self {
        Self {
            code: 400,
            message: Cow::Owned(format!(
                "JSON contains too many levels of nesting; maximum is {max}"
            )),
        }
    }
    /// 400: `state` holds a key other than `desired`/`reported`, or an array holds `null`.
    pub const fn invalid_node() -> Self {
        Self::fixed(400, "State contains an invalid node")
    }
    /// 400: a telemetry sample's `ts` is not epoch milliseconds.
    pub const fn invalid_timestamp() -> Self {
        Self::fixed(400, "Invalid ts: expected epoch milliseconds")
    }
    /// 400: the document violates the device type's JSON Schema; the message names the path.
    pub fn schema(message: String) -> Self {
        Self {
            code: 400,
            message: Cow::Owned(message),
        }
    }
    /// 400: a new named shadow beyond the per-twin limit.
    pub fn too_many_shadows(max: usize) -> Self {
        Self {
            code: 400,
            message: Cow::Owned(format!("Too many named shadows; maximum is {max}")),
        }
    }
    /// 401: the requester did not authenticate.
    pub const fn unauthorized() -> Self {
        Self::fixed(401, "Unauthorized")
    }
    /// 403: the requester may not touch this twin.
    pub const fn forbidden() -> Self {
        Self::fixed(403, "Forbidden")
    }
    /// 404: the thing is not registered.
    pub const fn thing_not_found() -> Self {
        Self::fixed(404, "Thing not found")
    }
    /// 404: the shadow does not exist (or was deleted).
    pub fn no_shadow(name: &str) -> Self {
        Self {
            code: 404,
            message: Cow::Owned(format!("No shadow exists with name: {name}")),
        }
    }
    /// 409: the request's `version` is not the shadow's current version.
    pub const fn version_conflict() -> Self {
        Self::fixed(409, "Version conflict")
    }
    /// 413: the merged state would exceed the size limit.
    pub const fn too_large() -> Self {
        Self::fixed(413, "The payload exceeds the maximum size allowed")
    }
    /// 413: a telemetry sample over the size limit.
    pub fn sample_too_large(max: usize) -> Self {
        Self {
            code: 413,
            message: format!("The telemetry sample exceeds the maximum size allowed ({max} bytes)")
                .into(),
        }
    }
    /// 400: a device time (`ts`) ahead of the server's clock by more than the allowed skew.
    pub fn timestamp_in_future(max_skew_ms: u64) -> Self {
        Self {
            code: 400,
            message: format!(
                "Invalid ts: more than {} s ahead of the server's clock",
                max_skew_ms / 1000
            )
            .into(),
        }
    }
    /// 415: the payload is not UTF-8.
    pub const fn not_utf8() -> Self {
        Self::fixed(
            415,
            "Unsupported documented encoding; supported encoding is UTF-8",
        )
    }
    /// 429: too many requests in flight for one device.
    pub const fn too_many_requests() -> Self {
        Self::fixed(429, "Too many requests in flight")
    }
    /// 500: the node failed to process the request.
    pub const fn internal() -> Self {
        Self::fixed(500, "Internal service failure")
    }
}

/// Errors of twin-core outside the shadow protocol.
#[derive(Debug, thiserror::Error)]
pub enum TwinError {
    /// A thing, shadow or device type name outside the allowed alphabet or length.
    #[error("invalid {kind} name {name:?}: use 1 to {max} characters of a-z A-Z 0-9 : _ -")]
    InvalidName {
        /// What the name names.
        kind: &'static str,
        /// The offending name.
        name: String,
        /// The longest name allowed.
        max: usize,
    },
    /// A device type whose JSON Schema does not compile.
    #[error("invalid {section} schema: {message}")]
    InvalidSchema {
        /// `reported`, `desired` or `telemetry`.
        section: &'static str,
        /// Why the schema was refused.
        message: String,
    },
    /// A limit set outside its allowed range.
    #[error("invalid limit {name}: {message}")]
    InvalidLimit {
        /// The limit's name.
        name: &'static str,
        /// What is allowed.
        message: String,
    },
    /// A stored twin record that cannot be decoded.
    #[error("corrupt twin record: {0}")]
    Decode(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages_follow_the_aws_list() {
        let table: Vec<(ShadowError, u16, &str)> = vec![
            (ShadowError::invalid_json(), 400, "Invalid JSON"),
            (
                ShadowError::missing_state(),
                400,
                "Missing required node: state",
            ),
            (
                ShadowError::state_not_object(),
                400,
                "State node must be an object",
            ),
            (
                ShadowError::desired_not_object(),
                400,
                "Desired node must be an object",
            ),
            (
                ShadowError::reported_not_object(),
                400,
                "Reported node must be an object",
            ),
            (ShadowError::invalid_version(), 400, "Invalid version"),
            (
                ShadowError::invalid_client_token(),
                400,
                "Invalid clientToken",
            ),
            (
                ShadowError::too_deep(6),
                400,
                "JSON contains too many levels of nesting; maximum is 6",
            ),
            (
                ShadowError::invalid_node(),
                400,
                "State contains an invalid node",
            ),
            (ShadowError::unauthorized(), 401, "Unauthorized"),
            (ShadowError::forbidden(), 403, "Forbidden"),
            (ShadowError::thing_not_found(), 404, "Thing not found"),
            (
                ShadowError::no_shadow("pump-7"),
                404,
                "No shadow exists with name: pump-7",
            ),
            (ShadowError::version_conflict(), 409, "Version conflict"),
            (
                ShadowError::too_large(),
                413,
                "The payload exceeds the maximum size allowed",
            ),
            (
                ShadowError::not_utf8(),
                415,
                "Unsupported documented encoding; supported encoding is UTF-8",
            ),
            (
                ShadowError::too_many_requests(),
                429,
                "Too many requests in flight",
            ),
            (ShadowError::internal(), 500, "Internal service failure"),
        ];
        for (error, code, message) in table {
            assert_eq!((error.code, &*error.message), (code, message));
        }
    }
}
