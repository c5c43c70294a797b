//! Room enumerations: privacy, type and invitation setting, with their wire words.

use crate::names::ValidationError;

macro_rules! word_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $word:literal),+ $(,)? } default $default:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl Default for $name {
            fn default() -> Self {
                Self::$default
            }
        }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $word),+ }
            }

            pub fn parse(field: &str, raw: &str) -> Result<Self, ValidationError> {
                match raw {
                    $($word => Ok(Self::$variant),)+
                    _ => Err(ValidationError::new(field, format!(
                        "must be one of: {}", [$($word),+].join(", ")))),
                }
            }
        }
    };
}

word_enum!(
    /// Who can find and enter a room (PRODUCT.md §2).
    Privacy { Open = "open", Closed = "closed", Secret = "secret" } default Closed
);
word_enum!(
    /// Normal rooms let every reader post; auditoriums only presenters.
    RoomType { Normal = "normal", Auditorium = "auditorium" } default Normal
);
word_enum!(
    /// Whether a room sends invitations: follows its category, or never.
    Invitations { Inherit = "inherit", Off = "off" } default Inherit
);
