//! The configuration in force, shared by all tasks and replaced on reload (SIGHUP).
//!
//! Readers take an `Arc` snapshot and keep it for as long as they need (a session keeps the
//! tables it started with); a reload swaps the pointer, never mutates a snapshot.

use std::sync::{Arc, RwLock};

use crate::{Config, Tables};

/// The current [`Config`] and [`Tables`].
#[derive(Debug)]
pub struct Live {
    config: RwLock<Arc<Config>>,
    tables: RwLock<Arc<Tables>>,
}

impl Live {
    /// Starts with `config` and `tables`.
    pub fn new(config: Config, tables: Tables) -> Self {
        Self { config: RwLock::new(Arc::new(config)), tables: RwLock::new(Arc::new(tables)) }
    }

    /// A snapshot of the configuration.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A snapshot of the tables.
    pub fn tables(&self) -> Arc<Tables> {
        self.tables.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the configuration; sessions already running keep their snapshot.
    pub fn set_config(&self, config: Config) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }

    /// Replaces the tables; sessions already running keep their snapshot.
    pub fn set_tables(&self, tables: Tables) {
        *self.tables.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tables);
    }
}
