"""The HTTP client below the hook: one call to the API and back, typed. Imports nothing from planning/."""
