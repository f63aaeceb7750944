//! Against a real sandbox cluster.
