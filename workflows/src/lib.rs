//! Workflow definitions (the order saga) live here; see `shared/DESIGN.md`.
