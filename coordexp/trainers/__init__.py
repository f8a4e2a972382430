"""Old import paths kept for users of the previous layout (thin re-exports)."""
