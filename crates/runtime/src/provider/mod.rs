//! Metric providers the analysis reads from; SkyWalking's OAP is the one there is.
pub mod skywalking;
