//! provider
pub mod skywalking;
