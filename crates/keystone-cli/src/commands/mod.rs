//! One module per `keystone` command.

pub mod demo;
pub mod gen_cmd;
pub mod ingest;
pub mod sql;
pub mod tables;
