//! A lazily initialized value.
//!
//! Patched for Fabric (see `PATCHED.md`): waits on a `std::sync::OnceLock`
//! while another thread initializes the value, instead of spinning on an
//! atomic flag. The I/O pool's seven threads all wait on its queue while the
//! first caller starts them, and spinning took the CPU from that caller.

/// A lazily initialized value
pub struct Lazy<T, F> {
    value: std::sync::OnceLock<T>,
    init: F,
}

impl<T, F> Lazy<T, F> {
    /// Create a new Lazy
    pub const fn new(init: F) -> Self
    where
        F: Sized,
    {
        Self { value: std::sync::OnceLock::new(), init }
    }
}

impl<T, F> std::ops::Deref for Lazy<T, F>
where
    F: Fn() -> T,
{
    type Target = T;

    fn deref(&self) -> &T {
        self.value.get_or_init(|| (self.init)())
    }
}
