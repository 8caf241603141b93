"""sera's built-in plugins. They use only ``sera.plugin``'s public API, exactly as third-party plugins do."""
