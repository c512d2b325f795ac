//! Services the config declares (as the database records them, with their `admin` flag).

use crate::db::{self, ServiceRow};

use super::{Hub, Result};

impl Hub {
    pub fn services(&self) -> Result<Vec<ServiceRow>> {
        Ok(self.db.read(db::all_services)?)
    }

    pub fn service(&self, name: &str) -> Result<Option<ServiceRow>> {
        Ok(self.db.read(|c| db::service_by_name(c, name))?)
    }
}
