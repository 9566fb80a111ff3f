"""The cluster manifest: pydantic models, the ruamel loader with file:line errors, and the JSON Schema."""
