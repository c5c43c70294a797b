//! Domain types and rules of pchat: validated names, principals and scope, the permission table of
//! PRODUCT.md §3, and policy / configuration resolution. Pure functions only: no IO, no clock, no async.

pub mod config;
pub mod names;
pub mod permissions;
pub mod principal;
pub mod room;
pub mod text;

pub use config::{ChatConfig, ConfigScope, PolicyScope};
pub use names::{Address, Description, Name, ValidationError};
pub use permissions::{Access, RoomAcl, decide};
pub use principal::{Identity, Principal, Scope};
pub use room::{Invitations, Privacy, RoomType};
