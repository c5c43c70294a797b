//! The service's error type: one variant per stable API error code, with the field it concerns where there is one.

use pchat_core::ValidationError;
use pchat_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("authentication required")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("persistent chat is not enabled for this user by policy")]
    ChatDisabled,
    #[error("{0}")]
    Validation(#[from] ValidationError),
    #[error("{field}: the name is already taken")]
    NameTaken { field: String },
    #[error("{field}: {principal} is not in the scope of the category")]
    OutOfScope { field: String, principal: String },
    #[error("the category still contains rooms")]
    CategoryNotEmpty,
    #[error("the room is disabled")]
    RoomDisabled,
    #[error("{field}: {detail}")]
    TooLarge { field: String, detail: String },
    #[error("too many posts; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("{0}")]
    Conflict(String),
    /// A per-user limit is reached (topic feeds); nothing was written.
    #[error("{0}")]
    LimitReached(String),
    /// The change would leave the deployment without an administrator.
    #[error("this would leave no administrator: grant the admin role to someone else first")]
    LastAdministrator,
    /// The object changed since the version the caller named (`If-Match`); nothing was written.
    #[error("the object changed since the version given in If-Match; read it again")]
    PreconditionFailed,
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Too much work of this kind is in progress (password hashing); retry shortly.
    #[error("the server is busy; retry after {retry_after_secs} s")]
    Busy { retry_after_secs: u64 },
}

pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(ValidationError::new(field, message))
    }

    pub fn not_found(what: &str) -> Self {
        Self::NotFound(what.to_owned())
    }

    /// A store error as the service reports it, a taken name naming `field` (the store only knows that some unique
    /// name was taken).
    pub(crate) fn name_taken_as(e: StoreError, field: &str) -> Self {
        match Self::from(e) {
            Self::NameTaken { .. } => Self::NameTaken { field: field.to_owned() },
            other => other,
        }
    }

    /// The field a validation-type error concerns.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Validation(v) => Some(&v.field),
            Self::NameTaken { field } | Self::OutOfScope { field, .. } | Self::TooLarge { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NameTaken => Self::NameTaken { field: "name".into() },
            StoreError::NotFound => Self::NotFound("object".into()),
            StoreError::CategoryNotEmpty => Self::CategoryNotEmpty,
            StoreError::GroupCycle => {
                Self::validation("members", "a group cannot contain itself, directly or through nesting")
            }
            StoreError::RoomDisabled => Self::RoomDisabled,
            StoreError::Conflict => Self::Conflict("changed concurrently; try again".into()),
            StoreError::LastAdministrator => Self::LastAdministrator,
            StoreError::LimitReached => Self::LimitReached("a limit is reached".into()),
            StoreError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}
