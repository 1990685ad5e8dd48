"""Load scripts the project owns: they print figures; they are not unit tests."""
