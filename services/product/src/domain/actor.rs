//! Who acts: the caller or the service itself.

/// Who caused a change and which request it belongs to, for the audit trail and event envelopes.
#[derive(Clone, Debug, Default)]
pub struct Actor {
    /// The user id from the caller's access token; `None` when the service itself acts.
    pub user_id: Option<String>,
    pub correlation_id: String,
}

impl Actor {
    pub fn system() -> Self {
        Self::default()
    }
}
