//! The WIT records that are name/value pairs (`setting`, `header`), seen
//! without their generated types: those live in each plugin crate, and the
//! plugins implement this trait for them (see [`crate::channel_plugin`]).

/// A setting's key and value, or a header's name and value.
pub trait NamedValue {
    fn name(&self) -> &str;
    fn value(&self) -> &str;
}

/// For tables in tests.
impl NamedValue for (&str, &str) {
    fn name(&self) -> &str {
        self.0
    }

    fn value(&self) -> &str {
        self.1
    }
}
