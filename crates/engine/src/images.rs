//! Image verbs that need to know about containers (`rmi` refuses an image in use).

use crate::db;
use crate::{Engine, EngineError};

impl Engine {
    /// Removes an image. Containers using it block the removal unless `force`, which removes
    /// them first (as Podman's `rmi -f` does).
    pub fn remove_image(&self, reference: &str, force: bool) -> Result<Vec<String>, EngineError> {
        let _store = stasis_state::FileLock::exclusive(&self.layout.store_lock())?;
        let image = self.images.resolve(reference)?;
        let users = db::images_in_use(self.conn(), &image.id)?;
        if !users.is_empty() {
            if !force {
                return Err(EngineError::ImageInUse {
                    image: reference.to_string(),
                    containers: users.join(", "),
                });
            }
            for u in &users {
                self.remove(u, true)?;
            }
        }
        Ok(self.images.remove(&image.id)?)
    }
}
