//! Groups: the group model filtered by the caller's scopes, listing, creation with members,
//! membership changes, properties and deletion.

use serde_json::{Map, Value, json};

use crate::db::{self, GroupRow, RoleOwner};
use crate::rbac::Resource;

use super::{Error, Hub, Identity, Result};

impl Hub {
    pub fn group(&self, name: &str) -> Result<GroupRow> {
        self.db
            .read(|c| db::group_by_name(c, name))?
            .ok_or_else(|| Error::NotFound(format!("No such group: {name}")))
    }

    pub fn group_model(&self, identity: &Identity, group: &GroupRow) -> Result<Value> {
        let resource = Resource::Group { name: &group.name };
        let mut model = Map::new();
        model.insert("kind".into(), json!("group"));
        model.insert("name".into(), json!(group.name));
        if identity.allows("read:groups", &resource) {
            model.insert("properties".into(), group.properties.clone());
            model.insert(
                "users".into(),
                json!(self.db.read(|c| db::group_members(c, group.id))?),
            );
        }
        if identity.allows("read:groups", &resource)
            || identity.allows("read:roles:groups", &resource)
        {
            let roles: Vec<String> = self
                .db
                .read(|c| db::roles_of(c, RoleOwner::Group(group.id)))?
                .into_iter()
                .map(|r| r.name)
                .collect();
            model.insert("roles".into(), json!(roles));
        }
        Ok(Value::Object(model))
    }

    pub fn list_groups(
        &self,
        identity: &Identity,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Value>, usize)> {
        let groups: Vec<GroupRow> = self
            .db
            .read(db::all_groups)?
            .into_iter()
            .filter(|g| identity.allows("list:groups", &Resource::Group { name: &g.name }))
            .collect();
        let total = groups.len();
        let models = groups
            .iter()
            .skip(offset)
            .take(limit)
            .map(|g| self.group_model(identity, g))
            .collect::<Result<Vec<_>>>()?;
        Ok((models, total))
    }

    fn user_ids(&self, names: &[String]) -> Result<Vec<i64>> {
        let mut ids = Vec::new();
        for name in names {
            let user = self
                .db
                .read(|c| db::user_by_name(c, name))?
                .ok_or_else(|| Error::BadRequest(format!("No such user: {name}")))?;
            ids.push(user.id);
        }
        Ok(ids)
    }

    /// `POST /groups/{name}` and `POST /groups`.
    pub fn create_groups(
        &self,
        identity: &Identity,
        names: &[String],
        members: &[String],
    ) -> Result<Vec<Value>> {
        for name in names {
            if name.is_empty() || name.contains('/') {
                return Err(Error::BadRequest(format!("Invalid group name: {name:?}")));
            }
        }
        let ids = self.user_ids(members)?;
        let created = self.db.write(|tx| {
            let mut created = Vec::new();
            for name in names {
                let group = db::insert_group(tx, name)?;
                for id in &ids {
                    db::add_group_member(tx, group.id, *id)?;
                }
                created.push(group);
            }
            Ok(created)
        });
        let created = created.map_err(|e| match e {
            db::Error::Conflict(what) => Error::Conflict(format!("{what} already exists")),
            other => Error::Db(other),
        })?;
        created
            .iter()
            .map(|g| self.group_model(identity, g))
            .collect()
    }

    pub fn delete_group(&self, name: &str) -> Result<()> {
        let group = self.group(name)?;
        self.db.write(|tx| db::delete_group(tx, group.id))?;
        Ok(())
    }

    pub fn change_group_members(
        &self,
        identity: &Identity,
        name: &str,
        members: &[String],
        add: bool,
    ) -> Result<Value> {
        let group = self.group(name)?;
        let ids = self.user_ids(members)?;
        self.db.write(|tx| {
            for id in &ids {
                if add {
                    db::add_group_member(tx, group.id, *id)?;
                } else {
                    db::remove_group_member(tx, group.id, *id)?;
                }
            }
            Ok(())
        })?;
        self.group_model(identity, &group)
    }

    pub fn set_group_properties(
        &self,
        identity: &Identity,
        name: &str,
        properties: &Value,
    ) -> Result<Value> {
        let mut group = self.group(name)?;
        if !properties.is_object() {
            return Err(Error::BadRequest(
                "group properties must be a JSON object".into(),
            ));
        }
        self.db
            .write(|tx| db::set_group_properties(tx, group.id, properties))?;
        group.properties = properties.clone();
        self.group_model(identity, &group)
    }
}
