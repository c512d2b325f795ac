//! Services the config declares (as the database records them, with their `admin` flag).

use crate::db::{self, RoleOwner, ServiceRow};

use super::{Hub, Result};

impl Hub {
    pub fn services(&self) -> Result<Vec<ServiceRow>> {
        Ok(self.db.read(db::all_services)?)
    }

    pub fn service(&self, name: &str) -> Result<Option<ServiceRow>> {
        Ok(self.db.read(|c| db::service_by_name(c, name))?)
    }

    /// The names of the roles granted to a service (upstream's `roles` in its model); an
    /// `admin` service also holds the `admin` role, as upstream grants it.
    pub fn service_roles(&self, service: &ServiceRow) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .db
            .read(|c| db::roles_of(c, RoleOwner::Service(service.id)))?
            .into_iter()
            .map(|role| role.name)
            .collect();
        if service.admin && !names.iter().any(|n| n == "admin") {
            names.push("admin".into());
        }
        names.sort();
        Ok(names)
    }
}
