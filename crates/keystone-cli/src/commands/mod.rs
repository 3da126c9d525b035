//! One module per `keystone` command.

pub mod demo;
pub mod gen_cmd;
pub mod ingest;
pub mod keys;
pub mod profile;
pub mod resolve;
pub mod segment;
pub mod serve;
pub mod sql;
pub mod tables;
