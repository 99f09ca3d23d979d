//! Order activities and their downstream adapters live here; see `shared/DESIGN.md`.
