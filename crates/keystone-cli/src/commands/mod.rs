//! One module per `keystone` command.

pub mod demo;
pub mod forget;
pub mod gen_cmd;
pub mod ingest;
pub mod keys;
pub mod maintain;
pub mod profile;
pub mod resolve;
pub mod segment;
pub mod serve;
pub mod sql;
pub mod subject;
pub mod tables;
