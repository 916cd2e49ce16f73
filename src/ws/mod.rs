//! WebSocket gateway (placeholder until the streaming issue lands).

pub mod handlers;
pub mod upgrade;

#[derive(Default)]
pub struct SessionManager;

impl SessionManager {
    pub fn new() -> Self {
        Self
    }
    pub fn force_close_all(&self) {}
}
