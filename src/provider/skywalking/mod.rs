//! skywalking
