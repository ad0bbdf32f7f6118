//! Model records (Open WebUI's models table): presets, ownership and per-model access control.

use diesel::prelude::*;
use serde_json::Value;

use crate::revisions::Area;
use crate::schema::models;
use crate::{Store, StoreError};

/// A model record.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The model id as used in the API, such as `llama3:latest` or a preset's own id.
    pub id: String,
    /// For a preset, the model it runs on.
    pub base_model_id: Option<String>,
    /// The display name.
    pub name: String,
    /// The owner; `None` for models whose owner was deleted.
    pub user_id: Option<String>,
    /// Parameters applied to requests (`system`, `temperature`, …), a JSON object.
    pub params: Value,
    /// Descriptive metadata (description, tags, profile image), a JSON object.
    pub meta: Value,
    /// `None` (SQL NULL) is public; `{}` is private to the owner; otherwise read/write grants.
    pub access_control: Option<Value>,
    /// Whether the model is offered.
    pub is_active: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last change.
    pub updated_at: i64,
}

/// The fields of a model to create, or to replace in an update (everything but the timestamps).
#[derive(Debug, Clone, PartialEq)]
pub struct NewModel {
    /// The model id as used in the API.
    pub id: String,
    /// For a preset, the model it runs on.
    pub base_model_id: Option<String>,
    /// The display name.
    pub name: String,
    /// The owner, which must be an existing user.
    pub user_id: Option<String>,
    /// Parameters applied to requests, a JSON object.
    pub params: Value,
    /// Descriptive metadata, a JSON object.
    pub meta: Value,
    /// `None` or `Some(Value::Null)` is public; `{}` is private to the owner.
    pub access_control: Option<Value>,
    /// Whether the model is offered.
    pub is_active: bool,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = models)]
struct ModelRow {
    id: String,
    base_model_id: Option<String>,
    name: String,
    user_id: Option<String>,
    params: String,
    meta: String,
    access_control: Option<String>,
    is_active: bool,
    created_at: i64,
    updated_at: i64,
}

impl ModelRow {
    fn into_model(self) -> Result<Model, StoreError> {
        let json = |column: &str, text: &str| {
            serde_json::from_str::<Value>(text)
                .map_err(|e| StoreError::Corrupt(format!("model {} {column}: {e}", self.id)))
        };
        let params = json("params", &self.params)?;
        let meta = json("meta", &self.meta)?;
        let access_control = match &self.access_control {
            Some(text) => Some(json("access_control", text)?).filter(|v| !v.is_null()),
            None => None,
        };
        Ok(Model {
            id: self.id,
            base_model_id: self.base_model_id,
            name: self.name,
            user_id: self.user_id,
            params,
            meta,
            access_control,
            is_active: self.is_active,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(Insertable, AsChangeset)]
#[diesel(table_name = models)]
#[diesel(treat_none_as_null = true)]
struct ModelFields<'a> {
    base_model_id: Option<&'a str>,
    name: &'a str,
    user_id: Option<&'a str>,
    params: String,
    meta: String,
    access_control: Option<String>,
    is_active: bool,
    updated_at: i64,
}

impl<'a> ModelFields<'a> {
    fn of(model: &'a NewModel, now: i64) -> Self {
        ModelFields {
            base_model_id: model.base_model_id.as_deref(),
            name: &model.name,
            user_id: model.user_id.as_deref(),
            params: model.params.to_string(),
            meta: model.meta.to_string(),
            access_control: model
                .access_control
                .as_ref()
                .filter(|v| !v.is_null())
                .map(Value::to_string),
            is_active: model.is_active,
            updated_at: now,
        }
    }
}

impl Store {
    /// Creates a model record, bumps the `models` revision, and returns it.
    ///
    /// An id already taken gives [`StoreError::Conflict`]; an unknown owner gives [`StoreError::NotFound`].
    pub fn create_model(&self, model: &NewModel, now: i64) -> Result<Model, StoreError> {
        let fields = ModelFields::of(model, now);
        self.write(Area::Models, |c| {
            diesel::insert_into(models::table)
                .values((models::id.eq(&model.id), models::created_at.eq(now), &fields))
                .execute(c)?;
            load(c, &model.id)
        })
    }

    /// Replaces every field of the model `model.id` (keeping `created_at`), bumps the `models` revision,
    /// and returns it. A missing model gives [`StoreError::NotFound`].
    pub fn update_model(&self, model: &NewModel, now: i64) -> Result<Model, StoreError> {
        let fields = ModelFields::of(model, now);
        self.write(Area::Models, |c| {
            let n = diesel::update(models::table.find(&model.id)).set(&fields).execute(c)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            load(c, &model.id)
        })
    }

    /// The model record with this id, if any.
    pub fn get_model(&self, id: &str) -> Result<Option<Model>, StoreError> {
        let mut conn = self.conn()?;
        match load(&mut conn, id) {
            Ok(model) => Ok(Some(model)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every model record, by id.
    pub fn list_models(&self) -> Result<Vec<Model>, StoreError> {
        let mut conn = self.conn()?;
        let rows = models::table
            .order(models::id.asc())
            .select(ModelRow::as_select())
            .load(&mut *conn)?;
        rows.into_iter().map(ModelRow::into_model).collect()
    }

    /// Deletes a model record and bumps the `models` revision; a missing one gives [`StoreError::NotFound`].
    pub fn delete_model(&self, id: &str) -> Result<(), StoreError> {
        self.write(Area::Models, |c| {
            match diesel::delete(models::table.find(id)).execute(c)? {
                0 => Err(StoreError::NotFound),
                _ => Ok(()),
            }
        })
    }
}

/// One model by id, or [`StoreError::NotFound`].
fn load(conn: &mut crate::conn::AnyConnection, id: &str) -> Result<Model, StoreError> {
    models::table
        .find(id)
        .select(ModelRow::as_select())
        .first(conn)?
        .into_model()
}
