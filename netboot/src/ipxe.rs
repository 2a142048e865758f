//! iPXE scripts rendered from a node's [`crate::BootAction`]. (Filled in by the HTTP work.)
